"""The state shared by every handler of one running config."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field

import aiohttp
from aiohttp import web

from llamaswap.config.durations import parse_duration
from llamaswap.config.model import Config, PerformanceConfig
from llamaswap.observe.activity import ActivityStore, reuse_or_open
from llamaswap.observe.captures import CaptureBuffer
from llamaswap.observe.performance import PerformanceMonitor, PerformanceSettings
from llamaswap.router import Router
from llamaswap.server.auth import ApiKeyChecker
from llamaswap.server.inflight import InflightTracker
from llamaswap.server.proxy.upstream_client import UpstreamClient

ForwardHook = Callable[[str], Awaitable[None]]


@dataclass
class AppState:
    """Everything the handlers share. One per running config."""

    config: Config
    router: Router
    keys: ApiKeyChecker
    started: float = field(default_factory=time.time)
    session: aiohttp.ClientSession | None = None
    # Lean keep-alive client for plain-HTTP forwarding (see server/upstream_client.py).
    upstream_client: UpstreamClient | None = None
    inflight: InflightTracker = field(default_factory=InflightTracker)
    # The active profile's name (spec §2.9); None at startup and after every reload.
    active_profile: str | None = None
    # Test seam: awaited after the lease is granted and before forwarding.
    before_forward: ForwardHook | None = None
    # Recorded requests (spec §6.1): built from the config, kept across reloads by
    # `reconfigure_observe` while `store.path` stays the same.
    activity: ActivityStore = field(init=False)
    # The store opened by the caller (so a StoreError comes before anything starts); else
    # one is opened from the config.
    store: InitVar[ActivityStore | None] = None
    captures: CaptureBuffer = field(init=False)
    # Host sampling (spec §5.1 `/api/performance`); runs while the app does.
    performance: PerformanceMonitor = field(init=False)

    def __post_init__(self, store: ActivityStore | None) -> None:
        self.activity = store or open_store(self.config)
        self.captures = CaptureBuffer.from_mib(self.config.capture_buffer)
        self.performance = PerformanceMonitor(performance_settings(self.config.performance))

    def reconfigure_observe(self, config: Config, store: ActivityStore | None = None) -> None:
        """Apply a reloaded config's `store.path`, `metricsMaxInMemory`, `captureBuffer` and
        `performance`: the activity store is kept (history and ids go on) unless `store.path`
        changed, the capture buffer keeps its captures within the new size (none when the
        store changed: captures are keyed by the old store's ids), and the performance
        monitor takes the new interval (or stops, or starts) without a restart. `store` is
        what `reuse_or_open` gave for `config` when the caller opened it first."""
        if store is None:
            store = reuse_or_open(self.activity, config.store.path, config.metrics_max_in_memory)
        if store is not self.activity:
            self.activity.close()
            self.activity = store
            self.captures.resize(0)
        self.captures.resize(CaptureBuffer.from_mib(config.capture_buffer).capacity)
        self.performance.reconfigure(performance_settings(config.performance))


def open_store(config: Config) -> ActivityStore:
    """The activity store `config` asks for; StoreError when its file cannot be used."""
    return ActivityStore(config.store.path, config.metrics_max_in_memory)


def performance_settings(config: PerformanceConfig) -> PerformanceSettings:
    """The monitor's settings from the `performance` section (`every` checked by the loader)."""
    every = parse_duration(config.every)
    if every is None or every <= 0:
        return PerformanceSettings(disabled=config.disabled)
    return PerformanceSettings(disabled=config.disabled, every=every)


STATE = web.AppKey("llamaswap_state", AppState)
