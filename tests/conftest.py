"""Shared fixtures (keep small): a free port on 127.0.0.1."""

from __future__ import annotations

import pytest

from helpers import free_port


@pytest.fixture
def port() -> int:
    """A TCP port on 127.0.0.1 that was free when the test started."""
    return free_port()
