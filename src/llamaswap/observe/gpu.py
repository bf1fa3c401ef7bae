"""GPU readings from the vendors' command-line tools (`nvidia-smi`, `rocm-smi`), best effort.

The parsers are pure: text in, values out; anything unreadable becomes None (a field) or is
skipped (a card), never an exception, because these tools change their output between
versions and a monitor must not fail on that. `run_tool` is the only I/O here; it is
blocking and meant for a worker thread (forking a large process stalls the thread that
forks, which must not be the event loop's).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NVIDIA_INFO_QUERY",
    "NVIDIA_STATS_QUERY",
    "ROCM_INFO_ARGS",
    "ROCM_STATS_ARGS",
    "GpuInfo",
    "GpuReading",
    "nvidia_command",
    "parse_nvidia_info",
    "parse_nvidia_stats",
    "parse_rocm_info",
    "parse_rocm_stats",
    "run_tool",
]

MIB = 1024 * 1024
TOOL_TIMEOUT = 5.0  # seconds; a wedged driver can hang these tools indefinitely

NVIDIA_STATS_QUERY = (
    "index,name,uuid,temperature.gpu,temperature.memory,utilization.gpu,utilization.memory,"
    "memory.used,memory.total,fan.speed,power.draw"
)
NVIDIA_INFO_QUERY = "index,name,uuid,memory.total,driver_version,power.limit"
ROCM_STATS_ARGS = (
    "--showtemp",
    "--showuse",
    "--showmemuse",
    "--showmeminfo",
    "vram",
    "--showfan",
    "--showpower",
    "--showproductname",
    "--showuniqueid",
    "--json",
)
ROCM_INFO_ARGS = (
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuniqueid",
    "--showdriverversion",
    "--showmaxpower",
    "--json",
)

log = logging.getLogger("llamaswap.observe")


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. None means the tool did not report that value."""

    id: int
    name: str
    uuid: str = ""
    temp_c: float | None = None
    vram_temp_c: float | None = None
    util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    fan_speed_pct: float | None = None
    power_draw_w: float | None = None


@dataclass(frozen=True)
class GpuInfo:
    """What does not change about a GPU: for the hardware snapshot."""

    index: int
    vendor: str
    model: str
    uuid: str = ""
    memory_bytes: int | None = None
    driver: str | None = None
    power_limit_w: float | None = None


def nvidia_command(query: str) -> list[str]:
    return ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"]


def run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT) -> str | None:
    """stdout of `argv`, or None when the tool is not on PATH, fails or times out. Blocking."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s failed: %s", argv[0], exc)
        return None
    if done.returncode != 0:
        log.debug("%s exited with %d", argv[0], done.returncode)
        return None
    return done.stdout.decode("utf-8", "replace")


# ---- parsing (pure) -------------------------------------------------------------------------

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _number(text: Any) -> float | None:
    """A number from a tool's field; None for `[N/A]`, `N/A`, `[Not Supported]`, empty, junk."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        return None
    text = text.strip()
    return float(text) if _NUMBER.match(text) else None


def _mib_bytes(text: str) -> int | None:
    value = _number(text)
    return None if value is None else int(value * MIB)


def _percent(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return used / total * 100


def _csv_rows(text: str, width: int) -> list[list[str]]:
    # GPU names never contain commas in nvidia-smi's output; a row of the wrong width is a
    # line we do not understand (a warning, a truncated line) and is skipped.
    rows = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == width and fields[0].isdigit():
            rows.append(fields)
    return rows


def parse_nvidia_stats(text: str) -> list[GpuReading]:
    """`nvidia-smi --query-gpu=<NVIDIA_STATS_QUERY> --format=csv,noheader,nounits`."""
    out = []
    for f in _csv_rows(text, 11):
        used, total = _mib_bytes(f[7]), _mib_bytes(f[8])
        mem_util = _percent(used, total)
        out.append(
            GpuReading(
                id=int(f[0]),
                name=f[1],
                uuid=f[2] if not f[2].startswith("[") else "",
                temp_c=_number(f[3]),
                vram_temp_c=_number(f[4]),
                util_pct=_number(f[5]),
                # utilization.memory is the memory *controller's* busy time; llama-swap
                # reports used/total as the memory utilisation, and so do we.
                mem_util_pct=mem_util,
                mem_used_bytes=used,
                mem_total_bytes=total,
                fan_speed_pct=_number(f[9]),
                power_draw_w=_number(f[10]),
            )
        )
    return out


def parse_nvidia_info(text: str) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=<NVIDIA_INFO_QUERY> --format=csv,noheader,nounits`."""
    out = []
    for f in _csv_rows(text, 6):
        out.append(
            GpuInfo(
                index=int(f[0]),
                vendor="NVIDIA",
                model=f[1],
                uuid=f[2] if not f[2].startswith("[") else "",
                memory_bytes=_mib_bytes(f[3]),
                driver=f[4] if f[4] and not f[4].startswith("[") else None,
                power_limit_w=_number(f[5]),
            )
        )
    return out


_CARD = re.compile(r"^card(\d+)$")


def _rocm_cards(text: str) -> list[tuple[int, Mapping[str, Any]]]:
    """(index, fields with lower-cased keys) per `cardN` entry of `rocm-smi --json`."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    cards = []
    for key, fields in data.items():
        match = _CARD.match(str(key))
        if match and isinstance(fields, dict):
            # Key spelling changes between ROCm versions ("Card series" / "Card Series").
            cards.append((int(match.group(1)), {str(k).lower(): v for k, v in fields.items()}))
    return sorted(cards, key=lambda c: c[0])


def _first(fields: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = fields.get(key)
        if value is not None and value not in {"", "N/A"}:
            return value
    return None


def _rocm_name(index: int, fields: Mapping[str, Any]) -> str:
    name = _first(fields, "card series", "device name", "card model")
    return str(name) if name is not None else f"card{index}"


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def parse_rocm_stats(text: str) -> list[GpuReading]:
    """`rocm-smi <ROCM_STATS_ARGS>` (JSON); VRAM is reported in bytes."""
    out = []
    for index, f in _rocm_cards(text):
        used = _int_or_none(_number(f.get("vram total used memory (b)")))
        total = _int_or_none(_number(f.get("vram total memory (b)")))
        mem_util = _percent(used, total)
        if mem_util is None:
            mem_util = _number(f.get("gpu memory allocated (vram%)"))
        power = _first(
            f,
            "average graphics package power (w)",
            "current socket graphics package power (w)",
        )
        out.append(
            GpuReading(
                id=index,
                name=_rocm_name(index, f),
                uuid=str(_first(f, "unique id") or ""),
                temp_c=_number(
                    _first(f, "temperature (sensor edge) (c)", "temperature (sensor junction) (c)")
                ),
                vram_temp_c=_number(f.get("temperature (sensor memory) (c)")),
                util_pct=_number(f.get("gpu use (%)")),
                mem_util_pct=mem_util,
                mem_used_bytes=used,
                mem_total_bytes=total,
                fan_speed_pct=_number(f.get("fan speed (%)")),
                power_draw_w=_number(power),
            )
        )
    return out


def parse_rocm_info(text: str) -> list[GpuInfo]:
    """`rocm-smi <ROCM_INFO_ARGS>` (JSON); the driver version sits under `system`."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    system = data.get("system") if isinstance(data, dict) else None
    driver = None
    if isinstance(system, dict):
        lowered = {str(k).lower(): v for k, v in system.items()}
        found = _first(lowered, "driver version", "driver_version")
        driver = str(found) if found is not None else None
    out = []
    for index, f in _rocm_cards(text):
        card_driver = _first(f, "driver version")
        out.append(
            GpuInfo(
                index=index,
                vendor="AMD",
                model=_rocm_name(index, f),
                uuid=str(_first(f, "unique id") or ""),
                memory_bytes=_int_or_none(_number(f.get("vram total memory (b)"))),
                driver=str(card_driver) if card_driver is not None else driver,
                power_limit_w=_number(_first(f, "max graphics package power (w)")),
            )
        )
    return out
