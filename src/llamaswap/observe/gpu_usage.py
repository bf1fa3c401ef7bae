"""What a model's processes really hold on each device, from `nvidia-smi`'s per-process view
(or `rocm-smi`'s on AMD cards).

`nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory` lists the memory every process
holds on every card; a model is a process tree (a wrapper script, llama-server, vLLM's
workers), so its usage is the sum over the pids of its tree. Cards are named by the
`devices` of the config: a card's uuid gives its index (from the `--query-gpu` readings),
the index gives the device name. The parsing and summing are pure; `read_compute_apps` and
`process_tree` are the I/O (blocking: call them from a worker thread).

`rocm-smi` has no per-(process, card) table: `--showpids --json` gives each KFD process's
VRAM in bytes over all its cards (`{"system": {"PID<pid>": "<name>, <cards>, <vram>,
<sdma>, <cu>"}}`) and `--showpidgpus` (text only: its JSON is empty) the card indices each
uses (`PID <pid> is using <n> DRM device(s):` then the indices). A process on several
cards is counted as holding an equal share on each (`rocm_usage`); the cards are keyed
`rocm<index>`.

Placement then counts max(declared, measured) per device (`swap.memory.resident_usage`),
and a model using more than it declared is logged as a warning (`check_declared`), so the
user can correct the config.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import psutil

from llamaswap.observe.gpu import MIB, run_tool

__all__ = [
    "NVIDIA_APPS_QUERY",
    "ROCM_PIDS_ARGS",
    "ROCM_PID_GPUS_ARGS",
    "ProcessUsage",
    "check_declared",
    "device_by_uuid",
    "measured_usage",
    "parse_compute_apps",
    "parse_rocm_pid_gpus",
    "parse_rocm_pids",
    "process_tree",
    "read_compute_apps",
    "read_rocm_apps",
    "rocm_key",
    "rocm_usage",
]

NVIDIA_APPS_QUERY = "gpu_uuid,pid,used_memory"
ROCM_PIDS_ARGS = ("--showpids", "--json")
ROCM_PID_GPUS_ARGS = ("--showpidgpus",)

log = logging.getLogger("llamaswap.observe")


@dataclass(frozen=True)
class ProcessUsage:
    """Memory one process holds on one card."""

    pid: int
    gpu_uuid: str
    used_bytes: int


def parse_compute_apps(text: str) -> list[ProcessUsage]:
    """Rows of `--query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits`;
    rows that do not parse (`[N/A]` memory under some drivers, warnings) are skipped."""
    out = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        out.append(ProcessUsage(int(fields[1]), fields[0], int(fields[2]) * MIB))
    return out


def read_compute_apps() -> list[ProcessUsage] | None:
    """The per-process usage now, or None when nvidia-smi is missing or fails. Blocking."""
    argv = [
        "nvidia-smi",
        f"--query-compute-apps={NVIDIA_APPS_QUERY}",
        "--format=csv,noheader,nounits",
    ]
    text = run_tool(argv)
    return None if text is None else parse_compute_apps(text)


def parse_rocm_pids(text: str) -> dict[int, int]:
    """pid -> VRAM bytes (over all its cards) from `rocm-smi --showpids --json`; entries
    that do not parse (`unknown` VRAM, other keys) are skipped."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    system = data.get("system") if isinstance(data, dict) else None
    if not isinstance(system, dict):
        return {}
    out: dict[int, int] = {}
    for key, value in system.items():
        pid = str(key).removeprefix("PID")
        fields = [f.strip() for f in str(value).split(",")]
        # The name may hold commas: the four numbers are the last fields.
        if pid != str(key) and pid.isdigit() and len(fields) >= 5 and fields[-3].isdigit():
            out[int(pid)] = int(fields[-3])
    return out


_PID_GPUS = re.compile(r"PID (\d+) is using (\d+) DRM device\(s\):?[ \t]*\n?([\d \t]*)")


def parse_rocm_pid_gpus(text: str) -> dict[int, list[int]]:
    """pid -> card indices from `rocm-smi --showpidgpus` (its text output)."""
    out: dict[int, list[int]] = {}
    for match in _PID_GPUS.finditer(text):
        count = int(match.group(2))
        indices = [int(i) for i in match.group(3).split()] if count else []
        out[int(match.group(1))] = indices[:count]
    return out


def rocm_key(index: int) -> str:
    """How `rocm_usage` names card `index` in its `ProcessUsage.gpu_uuid`."""
    return f"rocm{index}"


def rocm_usage(vram: Mapping[int, int], cards: Mapping[int, list[int]]) -> list[ProcessUsage]:
    """Per (process, card) usage from rocm-smi's per-process totals (`vram`) and the cards
    each process uses (`cards`): an equal share on each card (rocm-smi reports no split).
    A process on no known card is left out."""
    out = []
    for pid, used in sorted(vram.items()):
        indices = cards.get(pid, [])
        for index in indices:
            out.append(ProcessUsage(pid, rocm_key(index), used // len(indices)))
    return out


def read_rocm_apps() -> list[ProcessUsage] | None:
    """The per-process usage now from rocm-smi, or None when it is missing or fails.
    Blocking."""
    pids = run_tool(["rocm-smi", *ROCM_PIDS_ARGS])
    if pids is None:
        return None
    vram = parse_rocm_pids(pids)
    if not vram:
        return []
    gpus = run_tool(["rocm-smi", *ROCM_PID_GPUS_ARGS])
    return None if gpus is None else rocm_usage(vram, parse_rocm_pid_gpus(gpus))


def process_tree(pid: int) -> set[int]:
    """`pid` and every descendant alive now (empty when `pid` is gone). Blocking."""
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.Error:
        return set()


def device_by_uuid(
    cards: Iterable[tuple[int, str]], names_by_index: Mapping[int, str]
) -> dict[str, str]:
    """Card uuid -> device name, from (index, uuid) pairs and the config's device indices.
    A card with no device name is called `gpu<index>`, as detected devices are."""
    return {uuid: names_by_index.get(index, f"gpu{index}") for index, uuid in cards if uuid}


def measured_usage(
    apps: Iterable[ProcessUsage], pids: Collection[int], names: Mapping[str, str]
) -> dict[str, int]:
    """Bytes held by the processes `pids` on each device (devices they hold nothing on are
    absent; a card missing from `names` is named by its uuid)."""
    usage: dict[str, int] = {}
    for app in apps:
        if app.pid in pids:
            device = names.get(app.gpu_uuid, app.gpu_uuid)
            usage[device] = usage.get(device, 0) + app.used_bytes
    return usage


def check_declared(
    model: str, declared: Mapping[str, int], measured: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """Devices where `model` uses more than declared: device -> (measured, declared); each
    is logged as a warning."""
    over = {
        d: (used, declared.get(d, 0)) for d, used in measured.items() if used > declared.get(d, 0)
    }
    for device, (used, want) in sorted(over.items()):
        log.warning(
            "model %s uses %d MiB on %s, more than the %d MiB it declares in resources.memory; "
            "placement counts the measured value",
            model,
            used // MIB,
            device,
            want // MIB,
        )
    return over
