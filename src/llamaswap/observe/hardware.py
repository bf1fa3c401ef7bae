"""The host hardware snapshot behind `/api/hardware`: OS, CPU, memory, GPUs.

`read_hardware` is blocking (it reads `/proc`, asks psutil and runs the GPU tools) and is
run once, in a worker thread, by `HardwareCache`; the parsers are pure. The JSON follows
llama-swap's snapshot (`schema_version`, `architecture`, `operating_system`, `cpu`,
`memory`, `accelerators`) and adds `hostname`; a value that could not be found is null.
"""

from __future__ import annotations

import asyncio
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from llamaswap.errors import LlamaswapError
from llamaswap.observe import gpu
from llamaswap.observe.gpu import GpuInfo
from llamaswap.observe.performance import format_rfc3339

__all__ = ["HardwareCache", "HardwareError", "parse_cpuinfo", "read_hardware", "snapshot_json"]

SCHEMA_VERSION = 1


class HardwareError(LlamaswapError):
    """The host could not be described."""


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """`vendor`, `model` and `sockets` from `/proc/cpuinfo` (x86 and ARM spellings)."""
    fields: dict[str, str] = {}
    sockets: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "physical id":
            sockets.add(value)
        fields.setdefault(key, value)
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
    if not model and fields.get("model", "").strip() and not fields["model"].isdigit():
        model = fields["model"]  # ARM boards: "Raspberry Pi 4 Model B Rev 1.4"
    vendor = fields.get("vendor_id") or fields.get("vendor") or None
    return {"vendor": vendor, "model": model or None, "sockets": len(sockets) or None}


def _accelerator_json(g: GpuInfo) -> dict[str, Any]:
    return {
        "index": g.index,
        "kind": "gpu",
        "vendor": g.vendor,
        "model": g.model,
        "uuid": g.uuid or None,
        "memory": {"kind": "dedicated", "capacity_bytes": g.memory_bytes},
        "driver": {"name": g.vendor.lower(), "version": g.driver} if g.driver else None,
        "power_limit_watts": g.power_limit_w,
    }


def snapshot_json(
    *,
    captured_at: float,
    hostname: str,
    system: str,
    os_name: str | None,
    os_version: str | None,
    kernel: str | None,
    machine: str,
    cpuinfo: dict[str, Any],
    physical_cores: int | None,
    logical_cores: int | None,
    memory_bytes: int,
    gpus: list[GpuInfo],
) -> dict[str, Any]:
    """The `/api/hardware` answer from what was read."""
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": format_rfc3339(captured_at),
        "hostname": hostname,
        "architecture": {"name": machine.lower() or None, "raw_name": machine or None},
        "operating_system": {
            "family": system.lower() or "unknown",
            "name": os_name,
            "version": os_version,
            "kernel": kernel,
        },
        "cpu": {
            "vendor": cpuinfo.get("vendor"),
            "model": cpuinfo.get("model"),
            "socket_count": cpuinfo.get("sockets"),
            "physical_core_count": physical_cores,
            "logical_thread_count": logical_cores,
        },
        "memory": {"capacity_bytes": memory_bytes},
        "accelerators": [_accelerator_json(g) for g in gpus],
    }


def _read_gpus() -> list[GpuInfo]:
    text = gpu.run_tool(gpu.nvidia_command(gpu.NVIDIA_INFO_QUERY))
    found = gpu.parse_nvidia_info(text) if text is not None else []
    text = gpu.run_tool(["rocm-smi", *gpu.ROCM_INFO_ARGS])
    if text is not None:
        found += gpu.parse_rocm_info(text)
    return found


def read_hardware() -> dict[str, Any]:
    """Describe this host. Blocking; raises HardwareError when the basics cannot be read."""
    try:
        memory = psutil.virtual_memory().total
        logical = psutil.cpu_count(logical=True)
        physical = psutil.cpu_count(logical=False)
    except Exception as exc:
        raise HardwareError(f"hardware detection failed: {exc}") from exc
    try:
        cpuinfo = parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        cpuinfo = {"vendor": None, "model": platform.processor() or None, "sockets": None}
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    return snapshot_json(
        captured_at=time.time(),
        hostname=socket.gethostname(),
        system=platform.system(),
        os_name=release.get("NAME"),
        os_version=release.get("VERSION_ID"),
        kernel=platform.release() or None,
        machine=platform.machine(),
        cpuinfo=cpuinfo,
        physical_cores=physical,
        logical_cores=logical,
        memory_bytes=memory,
        gpus=_read_gpus(),
    )


class HardwareCache:
    """Reads the hardware once, off the event loop, and remembers it.

    A failure (always a HardwareError) is not remembered: the next request tries again.
    Concurrent first requests share one read.
    """

    def __init__(self, read: Callable[[], dict[str, Any]] | None = None) -> None:
        self._read = read
        self._value: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        if self._value is not None:
            return self._value
        async with self._lock:
            if self._value is None:
                # Looked up at call time so a test can stand in for the module function.
                read = self._read or read_hardware
                try:
                    self._value = await asyncio.to_thread(read)
                except HardwareError:
                    raise
                except Exception as exc:
                    raise HardwareError(f"hardware detection failed: {exc}") from exc
            return self._value
