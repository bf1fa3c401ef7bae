"""The browser shared by the UI tests: one chromium for the whole session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    # Imported here: importing it skips a module when chromium is missing, which must
    # happen to the test modules, not to this conftest.
    from browser_pages import CHROMIUM, LAUNCH_ARGS, sync_api  # noqa: PLC0415

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()
