"""Host gauges for `/metrics` (spec §6.3), read from the latest performance sample only.

The collector is added to the app's `Metrics` next to the request metrics; it
reads the monitor at scrape time, so nothing is copied per sample. No sample (sampling
disabled, or none taken yet) means no host metrics at all; the request metrics stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from llamaswap.observe.gpu import GpuReading
    from llamaswap.observe.performance import Sample

__all__ = ["HostCollector"]

_GPU_LABELS = ["id", "name", "uuid"]
# (metric name, help, reading of the value); a reading the tool did not report is left out.
_GPU_GAUGES: tuple[tuple[str, str, Callable[[GpuReading], float | None]], ...] = (
    ("llamaswap_gpu_temperature_celsius", "GPU temperature.", lambda g: g.temp_c),
    ("llamaswap_gpu_vram_temperature_celsius", "GPU memory temperature.", lambda g: g.vram_temp_c),
    ("llamaswap_gpu_util_percent", "GPU utilisation.", lambda g: g.util_pct),
    ("llamaswap_gpu_memory_util_percent", "GPU memory in use, percent.", lambda g: g.mem_util_pct),
    (
        "llamaswap_gpu_memory_used_bytes",
        "GPU memory in use.",
        lambda g: None if g.mem_used_bytes is None else float(g.mem_used_bytes),
    ),
    (
        "llamaswap_gpu_memory_total_bytes",
        "GPU memory.",
        lambda g: None if g.mem_total_bytes is None else float(g.mem_total_bytes),
    ),
    ("llamaswap_gpu_fan_speed_percent", "GPU fan speed.", lambda g: g.fan_speed_pct),
    ("llamaswap_gpu_power_draw_watts", "GPU power draw.", lambda g: g.power_draw_w),
)


class HostCollector:
    """Host CPU, memory, swap, load, network and GPU metrics of `latest()`."""

    def __init__(self, latest: Callable[[], Sample | None]) -> None:
        self._latest = latest

    def describe(self) -> Iterable[Metric]:
        # Nothing to describe up front: the families depend on the host (GPUs, interfaces).
        return []

    def collect(self) -> Iterable[Metric]:
        # prometheus-client is loaded by the first scrape, not by serving (see `metrics`).
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        sample = self._latest()
        if sample is None:
            return []
        s = sample.sys
        cpu = GaugeMetricFamily(
            "llamaswap_cpu_util_percent", "CPU utilisation per logical core.", labels=["core"]
        )
        for core, share in enumerate(s.cpu_util_per_core):
            cpu.add_metric([str(core)], share)
        out: list[Metric] = [cpu]
        for name, help_text, value in (
            ("llamaswap_memory_total_bytes", "Physical memory.", s.mem_total),
            ("llamaswap_memory_used_bytes", "Physical memory in use.", s.mem_used),
            ("llamaswap_memory_free_bytes", "Physical memory unused.", s.mem_free),
            ("llamaswap_swap_total_bytes", "Swap space.", s.swap_total),
            ("llamaswap_swap_used_bytes", "Swap space in use.", s.swap_used),
        ):
            out.append(GaugeMetricFamily(name, help_text, value=value))
        load = GaugeMetricFamily(
            "llamaswap_load_average", "System load average.", labels=["interval"]
        )
        for interval, average in zip(("1m", "5m", "15m"), s.load_avg, strict=True):
            load.add_metric([interval], average)
        out.append(load)
        net = CounterMetricFamily(
            "llamaswap_network_bytes",
            "Bytes through each network interface since boot.",
            labels=["interface", "direction"],
        )
        for nic in s.net_io:
            net.add_metric([nic.interface, "recv"], nic.bytes_recv)
            net.add_metric([nic.interface, "sent"], nic.bytes_sent)
        out.append(net)
        for name, help_text, read in _GPU_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=_GPU_LABELS)
            for g in sample.gpus:
                reading = read(g)
                if reading is not None:
                    family.add_metric([str(g.id), g.name, g.uuid], reading)
            if family.samples:
                out.append(family)
        return out
