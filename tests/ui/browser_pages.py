"""Helpers of the UI tests: open a page of a real llamaswap in chromium, take screenshots.

Importing this module skips the importing test module when `/usr/bin/chromium` or the
`playwright` module is missing. Screenshots are taken in every run; with
`LLAMASWAP_UI_SCREENSHOTS=1` they are written to `docs/ui/` (the README's pictures),
otherwise into the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from llamaswap_proc import FAKE_CMD, LlamaswapProcess, fake_model

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
Page = sync_api.Page
expect = sync_api.expect

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "ui"
ANSWER = "asdf" * 10  # what the fake upstream streams

TWO_MODELS = (
    "models:\n"
    + fake_model(
        "alpha",
        "name: Alpha 7B",
        "description: the first fake model",
        "aliases: [a, first]",
    )
    + fake_model("beta", "description: the second fake model")
)


def loud_model(name: str) -> str:
    """A fake model that prints its `My PID` line and one line per request (no `--silent`)."""
    cmd = FAKE_CMD.replace(" --silent", "")
    return (
        f"  {name}:\n    cmd: {cmd} --port ${{PORT}} --model ${{MODEL_ID}}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def open_page(browser: Any, server: LlamaswapProcess, route: str, **ctx: Any) -> Any:
    ctx.setdefault("viewport", DESKTOP)
    ctx.setdefault("color_scheme", "light")
    context = browser.new_context(**ctx)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{server.base}/ui/#/{route}")
    return page


def shoot(page: Any, tmp_path: Path, name: str, full_page: bool = False) -> None:
    target = DOCS if os.environ.get("LLAMASWAP_UI_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size < 300_000, f"{path} is too large"


def close(page: Any) -> None:
    page.context.close()
