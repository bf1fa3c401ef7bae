"""The hardware upstream processes run on: which cards there are, what a child holds on
them, and the host memory sleeping models may hold.

Blocking I/O (the vendors' tools, the process table): call from a worker thread. The parsing
lives in `observe.gpu` and `observe.gpu_usage`; this module only asks and sums up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from llamaswap.observe.gpu import (
    NVIDIA_INFO_QUERY,
    ROCM_INFO_ARGS,
    nvidia_command,
    parse_nvidia_info,
    parse_rocm_info,
    run_tool,
)
from llamaswap.observe.gpu_usage import (
    ProcessUsage,
    device_by_uuid,
    measured_usage,
    process_tree,
    read_compute_apps,
    read_rocm_apps,
    rocm_key,
)

__all__ = ["Card", "detect_cards", "host_memory_total", "measure_tree"]


@dataclass(frozen=True)
class Card:
    """One detected GPU: its runtime index, uuid and memory in bytes."""

    index: int
    uuid: str
    memory: int


def _nvidia_cards() -> list[Card] | None:
    text = run_tool(nvidia_command(NVIDIA_INFO_QUERY))
    if text is None:
        return None
    return [Card(i.index, i.uuid, i.memory_bytes or 0) for i in parse_nvidia_info(text)]


def detect_cards() -> list[Card]:
    """The cards `nvidia-smi` (else `rocm-smi`) reports; empty when neither answers."""
    cards = _nvidia_cards()
    if cards:
        return cards
    text = run_tool(["rocm-smi", *ROCM_INFO_ARGS])
    if text is None:
        return []
    return [Card(i.index, i.uuid, i.memory_bytes or 0) for i in parse_rocm_info(text)]


def _nvidia_apps(
    names_by_index: Mapping[int, str],
) -> tuple[list[ProcessUsage], dict[str, str]] | None:
    apps = read_compute_apps()
    cards = _nvidia_cards() if apps is not None else None
    if apps is None or cards is None:
        return None
    return apps, device_by_uuid(((c.index, c.uuid) for c in cards), names_by_index)


def _rocm_apps(
    names_by_index: Mapping[int, str],
) -> tuple[list[ProcessUsage], dict[str, str]] | None:
    apps = read_rocm_apps()
    if apps is None:
        return None
    indices = {int(a.gpu_uuid.removeprefix("rocm")) for a in apps}
    return apps, device_by_uuid(((i, rocm_key(i)) for i in indices), names_by_index)


def measure_tree(pid: int, names_by_index: Mapping[int, str]) -> dict[str, int] | None:
    """Bytes per device name held by `pid` and its descendants (nvidia-smi's per-process
    view, else rocm-smi's); None when it cannot be read (neither tool answers, or the
    process is gone)."""
    pids = process_tree(pid)
    if not pids:
        return None
    found = _nvidia_apps(names_by_index) or _rocm_apps(names_by_index)
    if found is None:
        return None
    apps, names = found
    return measured_usage(apps, pids, names)


def host_memory_total() -> int:
    """The machine's RAM in bytes: the budget of sleeping models when `hostMemory` is not
    written (they hold their weights in host memory while asleep)."""
    return int(psutil.virtual_memory().total)
