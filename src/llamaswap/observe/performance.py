"""Host performance sampling: the history behind `/api/performance` and the host gauges of
`/metrics` (spec §5.1, §6.3).

A `PerformanceMonitor` takes a `Sample` every `performance.every` while its `async with`
block runs: per-core CPU utilisation, memory, swap, load average, bytes per network
interface (loopback excluded, as llama-swap does) and, best effort, one reading per GPU
from `nvidia-smi` or else `rocm-smi`. The last hour of samples is kept.

Reading the host blocks (psutil reads `/proc`; the GPU tools are child processes that can
take a while), so every read runs in a worker thread and the event loop never waits on it.
CPU utilisation is computed here from two readings of the per-core CPU times (a pure
function), not by psutil's `cpu_percent`, whose state is global to the process.

JSON (`performance_json`) keeps llama-swap's field names so its clients read ours:
`sys_stats` entries are `{timestamp, cpu_util_per_core:[%…], mem_total_mb, mem_used_mb,
mem_free_mb, swap_total_mb, swap_used_mb, load_avg_1, load_avg_5, load_avg_15,
net_io:[{name, bytes_recv, bytes_sent}]}`; `gpu_stats` entries (one per GPU per sample) are
`{timestamp, id, name, uuid, temp_c, vram_temp_c, gpu_util_pct, mem_util_pct, mem_used_mb,
mem_total_mb, fan_speed_pct, power_draw_w}`, null where the tool reported nothing.
Timestamps are RFC 3339 in UTC with microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psutil

from llamaswap.observe import gpu
from llamaswap.observe.gpu import GpuReading

__all__ = [
    "CpuTimes",
    "NetIO",
    "PerformanceMonitor",
    "PerformanceSettings",
    "Sample",
    "SysStat",
    "cpu_percent",
    "format_rfc3339",
    "history_capacity",
    "parse_rfc3339",
    "performance_json",
    "read_sample",
]

HISTORY_SECONDS = 3600.0
DEFAULT_EVERY = 5.0
# The first sample comes this soon after start (CPU utilisation needs two readings), so
# `/metrics` and `/api/performance` have data without waiting a whole interval.
FIRST_SAMPLE_AFTER = 1.0
MB = 1024 * 1024

log = logging.getLogger("llamaswap.observe")

CpuTimes = tuple[tuple[float, float], ...]
"""(busy seconds, total seconds) per logical core, since boot."""


@dataclass(frozen=True)
class NetIO:
    interface: str
    bytes_recv: int
    bytes_sent: int


@dataclass(frozen=True)
class SysStat:
    """The host at one moment; sizes in bytes, `timestamp` in Unix seconds."""

    timestamp: float
    cpu_util_per_core: tuple[float, ...]
    mem_total: int
    mem_used: int
    mem_free: int
    swap_total: int
    swap_used: int
    load_avg: tuple[float, float, float]
    net_io: tuple[NetIO, ...]


@dataclass(frozen=True)
class Sample:
    sys: SysStat
    gpus: tuple[GpuReading, ...] = ()

    @property
    def timestamp(self) -> float:
        return self.sys.timestamp


# ---- pure -----------------------------------------------------------------------------------


def cpu_percent(prev: CpuTimes | None, cur: CpuTimes) -> tuple[float, ...]:
    """Busy share of each core between two readings, 0–100. Without `prev` (or for a core
    that was not there before) the share since boot."""
    out = []
    for i, (busy, total) in enumerate(cur):
        busy0, total0 = prev[i] if prev is not None and i < len(prev) else (0.0, 0.0)
        span = total - total0
        share = (busy - busy0) / span * 100 if span > 0 else 0.0
        out.append(round(min(100.0, max(0.0, share)), 2))
    return tuple(out)


def history_capacity(every: float) -> int:
    """How many samples make an hour at `every` seconds."""
    return max(1, math.ceil(HISTORY_SECONDS / every))


def format_rfc3339(when: float) -> str:
    stamp = dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 timestamp (a zone is required); ValueError otherwise."""
    if len(text) < 20 or text[10] not in "Tt":
        raise ValueError(text)
    parsed = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(text)
    return parsed.timestamp()


def _mb(value: int | None) -> int | None:
    return None if value is None else value // MB


def _sys_json(s: SysStat) -> dict[str, Any]:
    return {
        "timestamp": format_rfc3339(s.timestamp),
        "cpu_util_per_core": list(s.cpu_util_per_core),
        "mem_total_mb": s.mem_total // MB,
        "mem_used_mb": s.mem_used // MB,
        "mem_free_mb": s.mem_free // MB,
        "swap_total_mb": s.swap_total // MB,
        "swap_used_mb": s.swap_used // MB,
        "load_avg_1": s.load_avg[0],
        "load_avg_5": s.load_avg[1],
        "load_avg_15": s.load_avg[2],
        "net_io": [
            {"name": n.interface, "bytes_recv": n.bytes_recv, "bytes_sent": n.bytes_sent}
            for n in s.net_io
        ],
    }


def _gpu_json(when: float, g: GpuReading) -> dict[str, Any]:
    return {
        "timestamp": format_rfc3339(when),
        "id": g.id,
        "name": g.name,
        "uuid": g.uuid,
        "temp_c": g.temp_c,
        "vram_temp_c": g.vram_temp_c,
        "gpu_util_pct": g.util_pct,
        "mem_util_pct": g.mem_util_pct,
        "mem_used_mb": _mb(g.mem_used_bytes),
        "mem_total_mb": _mb(g.mem_total_bytes),
        "fan_speed_pct": g.fan_speed_pct,
        "power_draw_w": g.power_draw_w,
    }


def performance_json(samples: Iterable[Sample]) -> dict[str, Any]:
    """The `/api/performance` answer for `samples` (oldest first)."""
    sys_stats: list[dict[str, Any]] = []
    gpu_stats: list[dict[str, Any]] = []
    for sample in samples:
        sys_stats.append(_sys_json(sample.sys))
        gpu_stats.extend(_gpu_json(sample.timestamp, g) for g in sample.gpus)
    return {"enabled": True, "sys_stats": sys_stats, "gpu_stats": gpu_stats}


# ---- reading the host (blocking: worker threads only) ---------------------------------------


def read_cpu_times() -> CpuTimes:
    out = []
    for t in psutil.cpu_times(percpu=True):
        total = sum(t)
        # On Linux `guest` time is already counted in `user` (psutil does the same).
        total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
        idle = t.idle + getattr(t, "iowait", 0.0)
        out.append((total - idle, total))
    return tuple(out)


def read_gpus() -> tuple[GpuReading, ...]:
    """Readings from `nvidia-smi`, else `rocm-smi`; () when neither answers."""
    text = gpu.run_tool(gpu.nvidia_command(gpu.NVIDIA_STATS_QUERY))
    if text is not None and (readings := gpu.parse_nvidia_stats(text)):
        return tuple(readings)
    text = gpu.run_tool(["rocm-smi", *gpu.ROCM_STATS_ARGS])
    if text is not None:
        return tuple(gpu.parse_rocm_stats(text))
    return ()


def read_sample(prev: CpuTimes | None) -> tuple[Sample, CpuTimes]:
    """One sample of the host and its GPUs, and the CPU times it was computed from."""
    # Whole microseconds, as the JSON shows them: a client's `after=<a timestamp we sent>`
    # must compare equal to the sample it came from.
    now = round(time.time(), 6)
    cpu = read_cpu_times()
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    load = psutil.getloadavg()
    nics = psutil.net_io_counters(pernic=True)
    sys = SysStat(
        timestamp=now,
        cpu_util_per_core=cpu_percent(prev, cpu),
        mem_total=mem.total,
        mem_used=mem.used,
        mem_free=mem.free,
        swap_total=swap.total,
        swap_used=swap.used,
        load_avg=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        net_io=tuple(
            NetIO(name, c.bytes_recv, c.bytes_sent)
            for name, c in sorted(nics.items())
            if name != "lo"
        ),
    )
    return Sample(sys, read_gpus()), cpu


# ---- the monitor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceSettings:
    """`performance.disabled` and `performance.every` (in seconds) of the config."""

    disabled: bool = False
    every: float = DEFAULT_EVERY


class PerformanceMonitor:
    """Samples the host while its `async with` block runs; keeps the last hour.

    `every` overrides the settings' interval (test seam: the config refuses less than 5 s).
    `reconfigure` applies reloaded settings: a new interval takes effect at once and the
    history is kept (trimmed to an hour at the new interval); `disabled` stops sampling and
    drops the history, enabling starts it again.
    """

    def __init__(self, settings: PerformanceSettings, *, every: float | None = None) -> None:
        self._settings = settings
        self._every_override = every
        self._history: deque[Sample] = deque(maxlen=history_capacity(self.every))
        self._cpu: CpuTimes | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_read_seconds = 0.0  # wall time of the latest read (thread hop included)

    @property
    def enabled(self) -> bool:
        return not self._settings.disabled

    @property
    def every(self) -> float:
        return self._every_override or self._settings.every

    def latest(self) -> Sample | None:
        return self._history[-1] if self._history else None

    def samples(self, after: float | None = None) -> list[Sample]:
        """Samples taken strictly after `after` (Unix seconds), oldest first."""
        if after is None:
            return list(self._history)
        return [s for s in self._history if s.timestamp > after]

    def reconfigure(self, settings: PerformanceSettings) -> None:
        if settings == self._settings:
            return  # an unrelated reload must not restart the interval
        self._settings = settings
        if not self.enabled:
            self._history.clear()
            self._cpu = None
        elif self._history.maxlen != history_capacity(self.every):
            self._history = deque(self._history, maxlen=history_capacity(self.every))
        self._changed.set()

    async def sample_now(self) -> Sample | None:
        """Take one sample now (also what the interval does); None when disabled."""
        if not self.enabled:
            return None
        async with self._lock:
            started = time.perf_counter()
            sample, cpu = await asyncio.to_thread(read_sample, self._cpu)
            self.last_read_seconds = time.perf_counter() - started
            if not self.enabled:  # disabled while reading
                return None
            self._cpu = cpu
            self._history.append(sample)
            return sample

    async def __aenter__(self) -> PerformanceMonitor:
        self._task = asyncio.create_task(self._run(), name="llamaswap-performance")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _wait(self, seconds: float | None) -> bool:
        """Sleep `seconds` (None: forever); True when `reconfigure` changed something."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)
        changed = self._changed.is_set()
        self._changed.clear()
        return changed

    async def _run(self) -> None:
        """1. Disabled: wait for a reconfigure.
        2. No CPU baseline yet: read one; the first sample comes after FIRST_SAMPLE_AFTER.
        3. Wait the interval; a reconfigure restarts this from step 1.
        4. Sample (a failure is logged, the next interval tries again)."""
        while True:
            if not self.enabled:
                self._cpu = None  # a stale baseline would average over the pause
                await self._wait(None)
                continue
            delay = self.every
            if self._cpu is None:
                self._cpu = await asyncio.to_thread(read_cpu_times)
                delay = min(delay, FIRST_SAMPLE_AFTER)
            if await self._wait(delay):
                continue
            try:
                await self.sample_now()
            except Exception:
                log.exception("performance sample failed")
