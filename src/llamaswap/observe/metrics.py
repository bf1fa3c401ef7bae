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

Counters and histograms are plain numbers in dicts (`_Series`): an observation on the request
path is a dict lookup and an add, with no lock (everything runs on the event loop) and no
prometheus-client call. prometheus-client is imported on the first scrape, which turns the
numbers into the same series, names and `_created` samples its own `Counter` and `Histogram`
would have produced; a server that is never scraped never loads it.
"""

from __future__ import annotations

import bisect
import contextvars
import math
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "CONTENT_TYPE",
    "PROCESS_STATES",
    "Collector",
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


class Collector(Protocol):
    """What `/metrics` asks for families at scrape time (prometheus-client's collector shape)."""

    def collect(self) -> Iterable[Metric]: ...


def _created_series() -> bool:
    # The switch prometheus-client itself reads for its `_created` samples.
    flag = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return flag.lower() not in ("true", "1", "t")


@dataclass
class _Cell:
    """One series: a counter's total, or a histogram's per-bucket counts, sum and count."""

    created: float
    value: float = 0.0
    buckets: list[int] = field(default_factory=list)


class _Series:
    """A counter (`bounds` empty) or a histogram by label values, as plain numbers."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        bounds: tuple[float, ...] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.bounds = (*bounds, math.inf) if bounds else ()
        self.cells: dict[tuple[str, ...], _Cell] = {}
        if not labels:  # an unlabelled series exists from the start, as prometheus-client's
            self._cell(())

    def _cell(self, values: tuple[str, ...]) -> _Cell:
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = _Cell(time.time(), buckets=[0] * len(self.bounds))
        return cell

    def inc(self, values: tuple[str, ...], amount: float = 1.0) -> None:
        self._cell(values).value += amount

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        cell = self._cell(values)
        cell.value += amount
        cell.buckets[bisect.bisect_left(self.bounds, amount)] += 1

    def family(self, created: bool) -> Metric:
        """The series as prometheus-client would render its own Counter or Histogram."""
        from prometheus_client.core import Metric  # noqa: PLC0415 - only when scraped
        from prometheus_client.utils import floatToGoString  # noqa: PLC0415

        le_text = cast("Callable[[float], str]", floatToGoString)  # untyped upstream

        kind = "histogram" if self.bounds else "counter"
        family = Metric(self.name, self.documentation, kind)
        for values, cell in list(self.cells.items()):
            labels = dict(zip(self.labels, values, strict=True))
            if not self.bounds:
                family.add_sample(f"{self.name}_total", labels, cell.value)
            else:
                total = 0.0
                for bound, count in zip(self.bounds, cell.buckets, strict=True):
                    total += count
                    le = {**labels, "le": le_text(bound)}
                    family.add_sample(f"{self.name}_bucket", le, total)
                family.add_sample(f"{self.name}_count", labels, total)
                family.add_sample(f"{self.name}_sum", labels, cell.value)
            if created:
                family.add_sample(f"{self.name}_created", labels, cell.created)
        return family


class _PresentCollector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - only when scraped

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
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - only when scraped

    gauge = GaugeMetricFamily(name, documentation, labels=["model"])
    for model, value in sorted(values.items()):
        gauge.add_metric([model], value)
    return gauge


class _Accumulated:
    """The counters and histograms of one `Metrics`, in registration order."""

    def __init__(self, series: list[_Series]) -> None:
        self._series = series

    def collect(self) -> Iterable[Metric]:
        created = _created_series()
        return [s.family(created) for s in self._series]


class Metrics:
    """The series of one app; rendered through a registry of its own (never the global one)."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.requests = _Series(
            "llamaswap_requests",
            "HTTP requests served, by model, route and status.",
            ("model", "route", "status"),
        )
        self.request_duration = _Series(
            "llamaswap_request_duration_seconds",
            "Time from request arrival to the last byte of the response.",
            ("model", "route"),
            REQUEST_BUCKETS,
        )
        self.ttfb = _Series(
            "llamaswap_time_to_first_byte_seconds",
            "Time from request arrival until the response headers were sent.",
            ("model",),
            REQUEST_BUCKETS,
        )
        self.swaps = _Series(
            "llamaswap_swaps",
            "Model swaps (evict, then start the target), by target and outcome (ok/error).",
            ("target", "outcome"),
        )
        self.swap_duration = _Series(
            "llamaswap_swap_duration_seconds",
            "Time a swap took, evictions plus start.",
            bounds=SWAP_BUCKETS,
        )
        self.evictions = _Series(
            "llamaswap_evictions",
            "Models stopped, by reason (evict, ttl, unload).",
            ("model", "reason"),
        )
        self.queue_wait = _Series(
            "llamaswap_queue_wait_seconds",
            "Time a request waited for its lease (queue and model start).",
            bounds=REQUEST_BUCKETS,
        )
        self.start_failures = _Series(
            "llamaswap_start_failures", "Swaps whose target failed to start.", ("model",)
        )
        self.tokens = _Series(
            "llamaswap_tokens",
            "Tokens of recorded requests, by model and direction (in = prompt, out = generated).",
            ("model", "direction"),
        )
        series = [
            self.requests,
            self.request_duration,
            self.ttfb,
            self.swaps,
            self.swap_duration,
            self.evictions,
            self.queue_wait,
            self.start_failures,
            self.tokens,
        ]
        self._collectors: list[Collector] = [_Accumulated(series), _PresentCollector(snapshot)]
        self._registry: CollectorRegistry | None = None

    def add_collector(self, collector: Collector) -> None:
        """Render `collector`'s families after this app's own (host gauges, for one)."""
        self._collectors.append(collector)
        self._registry = None

    def remove_collector(self, collector: Collector) -> None:
        if collector in self._collectors:
            self._collectors.remove(collector)
            self._registry = None

    def render(self) -> bytes:
        """Every series in the Prometheus text format."""
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            for collector in self._collectors:
                registry.register(collector)
            self._registry = registry
        return generate_latest(self._registry)

    # ---- facts ------------------------------------------------------------------------------

    def record_swap(
        self, target: str, evicted: Iterable[str], error: str | None, seconds: float
    ) -> None:
        self.swaps.inc((target, "error" if error else "ok"))
        self.swap_duration.observe((), seconds)
        for model in sorted(evicted):
            self.evictions.inc((model, "evict"))
        if error:
            self.start_failures.inc((target,))

    def record_stop(self, model: str, reason: str) -> None:
        self.evictions.inc((model, reason))

    def record_grant(self, model: str, waited: float) -> None:
        self.queue_wait.observe((), max(0.0, waited))
        cell = _current.get()
        if cell is not None:
            cell.model = model

    def record_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        # Negative counts mean "unknown" in activity rows; a counter only ever grows.
        self.tokens.inc((model, "in"), max(0, input_tokens))
        self.tokens.inc((model, "out"), max(0, output_tokens))

    def record_request(self, cell: RequestCell, route: str, status: int) -> None:
        now = time.monotonic()
        self.requests.inc((cell.model, route, str(status)))
        self.request_duration.observe((cell.model, route), now - cell.started)
        if cell.model:
            first = cell.first_byte if cell.first_byte is not None else now
            self.ttfb.observe((cell.model,), first - cell.started)


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
