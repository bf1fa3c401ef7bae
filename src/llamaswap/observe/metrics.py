"""Prometheus collectors: requests, swaps, evictions, queue wait, leases, process states, tokens.

Each app owns one `Metrics` with its own `CollectorRegistry` (never the global one, so
several servers in one process — tests — do not mix their numbers).

The router and the request recorder report facts through the module-level hooks
(`swap_done`, `stopped`, `lease_granted`, `tokens_recorded`), keyed by the router's
`EventBus`: the bus is created once per server and outlives config reloads, and both the
router and the app can see it, so the router needs no reference to the app. A key with no
bound `Metrics` makes the hooks no-ops.

Gauges that describe the present (queue depth, leases, process states) are read from a
`Snapshot` at scrape time instead of being kept up to date by hooks: they cannot drift.
"""

from __future__ import annotations

import contextvars
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "PROCESS_STATES",
    "Metrics",
    "RequestCell",
    "Snapshot",
    "bind",
    "current_request",
    "lease_granted",
    "stopped",
    "swap_done",
    "tokens_recorded",
    "unbind",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROCESS_STATES = ("stopped", "starting", "ready", "stopping", "shutdown", "asleep")

# Seconds; model starts take seconds to minutes, requests milliseconds to minutes.
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True)
class Snapshot:
    """The present, read at scrape time: queue depth, leases and state per model."""

    queue_depth: int
    leases: Mapping[str, int]
    states: Mapping[str, str]
    queued: Mapping[str, int] = field(default_factory=dict)
    load_seconds: Mapping[str, float] = field(default_factory=dict)
    backoff_failures: Mapping[str, int] = field(default_factory=dict)


@dataclass
class RequestCell:
    """What the request-metrics middleware learns about one request while it runs."""

    started: float = field(default_factory=time.monotonic)
    model: str = ""
    first_byte: float | None = None


_current: contextvars.ContextVar[RequestCell | None] = contextvars.ContextVar(
    "llamaswap_request_cell", default=None
)


def current_request() -> contextvars.ContextVar[RequestCell | None]:
    """The context variable the middleware sets for the request being handled."""
    return _current


class _PresentCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        depth = GaugeMetricFamily(
            "llamaswap_queue_depth", "Requests waiting for a model (queued or starting)."
        )
        depth.add_metric([], snap.queue_depth)
        leases = GaugeMetricFamily(
            "llamaswap_leases", "Requests currently holding a lease on a model.", labels=["model"]
        )
        for model, count in sorted(snap.leases.items()):
            leases.add_metric([model], count)
        states = GaugeMetricFamily(
            "llamaswap_process_state",
            "1 for the current state of each model's upstream process, else 0.",
            labels=["model", "state"],
        )
        for model, current in sorted(snap.states.items()):
            for state in PROCESS_STATES:
                states.add_metric([model, state], 1 if state == current else 0)
        queued = _per_model(
            "llamaswap_model_queued", "Requests waiting for each model.", snap.queued
        )
        load = _per_model(
            "llamaswap_model_load_seconds",
            "Learned start-to-ready seconds of each model (moving average).",
            snap.load_seconds,
        )
        backoff = _per_model(
            "llamaswap_model_backoff_failures",
            "Failed starts in a row of a model that is backing off (absent when it is not).",
            snap.backoff_failures,
        )
        return [depth, leases, states, queued, load, backoff]


def _per_model(name: str, documentation: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["model"])
    for model, value in sorted(values.items()):
        gauge.add_metric([model], value)
    return gauge


class Metrics:
    """The collectors of one app, in their own registry."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "llamaswap_requests",
            "HTTP requests served, by model, route and status.",
            ["model", "route", "status"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "llamaswap_request_duration_seconds",
            "Time from request arrival to the last byte of the response.",
            ["model", "route"],
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.ttfb = Histogram(
            "llamaswap_time_to_first_byte_seconds",
            "Time from request arrival until the response headers were sent.",
            ["model"],
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.swaps = Counter(
            "llamaswap_swaps",
            "Model swaps (evict, then start the target), by target and outcome (ok/error).",
            ["target", "outcome"],
            registry=reg,
        )
        self.swap_duration = Histogram(
            "llamaswap_swap_duration_seconds",
            "Time a swap took, evictions plus start.",
            buckets=SWAP_BUCKETS,
            registry=reg,
        )
        self.evictions = Counter(
            "llamaswap_evictions",
            "Models stopped, by reason (evict, ttl, unload).",
            ["model", "reason"],
            registry=reg,
        )
        self.queue_wait = Histogram(
            "llamaswap_queue_wait_seconds",
            "Time a request waited for its lease (queue and model start).",
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.start_failures = Counter(
            "llamaswap_start_failures",
            "Swaps whose target failed to start.",
            ["model"],
            registry=reg,
        )
        self.tokens = Counter(
            "llamaswap_tokens",
            "Tokens of recorded requests, by model and direction (in = prompt, out = generated).",
            ["model", "direction"],
            registry=reg,
        )
        reg.register(_PresentCollector(snapshot))
        # Per-request series, looked up once per label set (see `_Children`).
        self._requests = _Children(self.requests)
        self._request_duration = _Children(self.request_duration)
        self._ttfb = _Children(self.ttfb)
        self._tokens = _Children(self.tokens)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    # ---- facts ------------------------------------------------------------------------------

    def record_swap(
        self, target: str, evicted: Iterable[str], error: str | None, seconds: float
    ) -> None:
        self.swaps.labels(target, "error" if error else "ok").inc()
        self.swap_duration.observe(seconds)
        for model in sorted(evicted):
            self.evictions.labels(model, "evict").inc()
        if error:
            self.start_failures.labels(target).inc()

    def record_stop(self, model: str, reason: str) -> None:
        self.evictions.labels(model, reason).inc()

    def record_grant(self, model: str, waited: float) -> None:
        self.queue_wait.observe(max(0.0, waited))
        cell = _current.get()
        if cell is not None:
            cell.model = model

    def record_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        # Negative counts mean "unknown" in activity rows; a counter only ever grows.
        self._tokens(model, "in").inc(max(0, input_tokens))
        self._tokens(model, "out").inc(max(0, output_tokens))

    def record_request(self, cell: RequestCell, route: str, status: int) -> None:
        now = time.monotonic()
        self._requests(cell.model, route, str(status)).inc()
        self._request_duration(cell.model, route).observe(now - cell.started)
        if cell.model:
            first = cell.first_byte if cell.first_byte is not None else now
            self._ttfb(cell.model).observe(first - cell.started)


M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """`metric.labels(*values)`, remembered per label set: prometheus_client takes a lock and
    builds a key on every `labels()` call, which showed in the request path's profile. The
    label sets are the series the metric keeps anyway, so this adds no cardinality."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


# ---- router hooks (keyed by the router's EventBus) -----------------------------------------

_sinks: weakref.WeakKeyDictionary[object, Metrics] = weakref.WeakKeyDictionary()


def bind(key: object, metrics: Metrics) -> None:
    """Send the hooks called with `key` to `metrics`."""
    _sinks[key] = metrics


def unbind(key: object) -> None:
    _sinks.pop(key, None)


def _sink(key: object) -> Iterator[Metrics]:
    sink = _sinks.get(key)
    if sink is not None:
        yield sink


def swap_done(
    key: object, target: str, evicted: Iterable[str], error: str | None, seconds: float
) -> None:
    """A swap finished: `evicted` were stopped, `target` started (or failed with `error`)."""
    for sink in _sink(key):
        sink.record_swap(target, evicted, error, seconds)


def stopped(key: object, model: str, reason: str) -> None:
    """`model` was stopped outside a swap (reason `ttl` or `unload`)."""
    for sink in _sink(key):
        sink.record_stop(model, reason)


def tokens_recorded(key: object, model: str, input_tokens: int, output_tokens: int) -> None:
    """A request to `model` was recorded with these prompt and generated token counts."""
    for sink in _sink(key):
        sink.record_tokens(model, input_tokens, output_tokens)


def lease_granted(key: object, model: str, waited: float) -> None:
    """A request got its lease on `model` after waiting `waited` seconds."""
    for sink in _sink(key):
        sink.record_grant(model, waited)
