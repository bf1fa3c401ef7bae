"""The state shared by every handler of one running config."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from llamaswap.config.model import Config
from llamaswap.router import Router
from llamaswap.server.auth import ApiKeyChecker
from llamaswap.server.inflight import InflightTracker

ForwardHook = Callable[[str], Awaitable[None]]


@dataclass
class AppState:
    """Everything the handlers share. One per running config."""

    config: Config
    router: Router
    keys: ApiKeyChecker
    started: float = field(default_factory=time.time)
    session: aiohttp.ClientSession | None = None
    inflight: InflightTracker = field(default_factory=InflightTracker)
    # The active profile's name (spec §2.9); None at startup and after every reload.
    active_profile: str | None = None
    # Test seam: awaited after the lease is granted and before forwarding.
    before_forward: ForwardHook | None = None


STATE = web.AppKey("llamaswap_state", AppState)
