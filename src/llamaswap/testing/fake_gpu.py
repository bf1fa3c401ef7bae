"""A fake `nvidia-smi` (and `rocm-smi`) for tests and demos: GPUs and per-process memory
from a state file.

`python -m llamaswap.testing.fake_gpu [nvidia-smi flags]` answers, from the JSON file named
by `$LLAMASWAP_FAKE_GPU_STATE`, the two queries llamaswap makes:

* `--query-gpu=<fields> --format=csv[,noheader][,nounits]`: `index`, `name`, `uuid`,
  `memory.total`, `memory.used`, `memory.free`, `temperature.gpu`, `utilization.gpu`, ...
  (see `_GPU_FIELDS`; a field the fake does not model answers `[N/A]`, as real cards do);
* `--query-compute-apps=<fields>`: `pid`, `used_memory`, `gpu_uuid`, `gpu_bus_id`,
  `process_name`: one row per (live process, GPU) registered in the state file.

An unknown field fails like the real tool (exit 2, `Field "x" is not a valid field to
query.`). `install(bin_dir, state)` writes an executable `nvidia-smi` into `bin_dir`, for a
test to put first on `PATH`; processes that "use" memory (the fake upstream's `--memory`)
`register` and `unregister` themselves. Memory is in MiB throughout, as nvidia-smi prints it.

`python -m llamaswap.testing.fake_gpu --rocm [rocm-smi flags]` answers as `rocm-smi` does
(`install(..., tool="rocm-smi")`): the card JSON of `--showproductname --showmeminfo vram
--showuniqueid ... --json`, `--showpids --json` (`{"system": {"PID<pid>": "<name>, <cards>,
<vram bytes>, 0, 0"}}`) and the text of `--showpidgpus`, in the shapes of ROCm's
`rocm_smi.py`.

State file: `{"gpus": [{"name": "Fake GPU", "memory_mib": 24576}, ...],
"apps": [{"pid": 123, "gpu": 0, "used_mib": 1000, "name": "python"}]}`; a GPU's index is its
position in `gpus`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "STATE_ENV",
    "answer",
    "answer_rocm",
    "install",
    "main",
    "read_state",
    "register",
    "unregister",
    "write_state",
]

STATE_ENV = "LLAMASWAP_FAKE_GPU_STATE"
DRIVER_VERSION = "550.00-fake"
ROCM_DRIVER_VERSION = "6.8.5-fake"
_MIB = 1024 * 1024
_NA = "[N/A]"

Gpu = Mapping[str, Any]
_MEMORY_FIELDS = {"memory.total", "memory.used", "memory.free", "used_memory"}
_UNITS = {
    "memory.total": " MiB",
    "memory.used": " MiB",
    "memory.free": " MiB",
    "used_memory": " MiB",
    "power.draw": " W",
    "power.limit": " W",
    "temperature.gpu": "",
    "utilization.gpu": " %",
}


def _uuid(index: int) -> str:
    return f"GPU-fake0000-0000-0000-0000-{index:012d}"


def _bus(index: int) -> str:
    return f"00000000:{index + 1:02X}:00.0"


# ---- the state file ---------------------------------------------------------------------------


def _state_path(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    value = os.environ.get(STATE_ENV)
    if not value:
        raise RuntimeError(f"{STATE_ENV} is not set")
    return Path(value)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Several fake upstreams start and stop at once; a side lock file serialises their edits.
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(path: str | Path | None = None) -> dict[str, Any]:
    """The state as written (no liveness filtering); empty when the file is absent."""
    try:
        data = json.loads(_state_path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"gpus": [], "apps": []}
    return data if isinstance(data, dict) else {"gpus": [], "apps": []}


def _write(path: Path, state: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(path)  # readers see the old or the new file, never half of one


def write_state(path: str | Path, gpus: Sequence[tuple[str, int]]) -> Path:
    """Create a state file with these (name, memory MiB) GPUs and no processes."""
    target = Path(path)
    with _locked(target):
        _write(target, {"gpus": [{"name": n, "memory_mib": m} for n, m in gpus], "apps": []})
    return target


def _update(path: str | Path | None, change: Callable[[list[dict[str, Any]]], None]) -> None:
    target = _state_path(path)
    with _locked(target):
        state = read_state(target)
        apps = [a for a in state.get("apps", []) if isinstance(a, dict)]
        change(apps)
        state["apps"] = apps
        _write(target, state)


def register(
    pid: int, usage: Mapping[int, int], name: str = "python", path: str | Path | None = None
) -> None:
    """Record that `pid` uses `usage` (GPU index -> MiB), replacing what it used before."""

    def change(apps: list[dict[str, Any]]) -> None:
        apps[:] = [a for a in apps if a.get("pid") != pid]
        apps += [
            {"pid": pid, "gpu": gpu, "used_mib": mib, "name": name}
            for gpu, mib in sorted(usage.items())
            if mib > 0
        ]

    _update(path, change)


def unregister(pid: int, path: str | Path | None = None) -> None:
    """Forget every GPU use of `pid`."""
    _update(
        path, lambda apps: apps.__setitem__(slice(None), [a for a in apps if a.get("pid") != pid])
    )


def install(bin_dir: str | Path, state: str | Path, tool: str = "nvidia-smi") -> Path:
    """Write an executable `tool` (`nvidia-smi` or `rocm-smi`) into `bin_dir` that reads
    `state` (unless the environment names another state file); returns its path."""
    if tool not in ("nvidia-smi", "rocm-smi"):
        raise ValueError(f"no fake {tool}")
    exe = Path(bin_dir) / tool
    mode = " --rocm" if tool == "rocm-smi" else ""
    exe.write_text(
        "#!/bin/sh\n"
        f': "${{{STATE_ENV}:={Path(state).resolve()}}}"\n'
        f"export {STATE_ENV}\n"
        f'exec "{sys.executable}" -m llamaswap.testing.fake_gpu{mode} "$@"\n',
        encoding="utf-8",
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


# ---- answering queries ------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_apps(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # nvidia-smi lists only running processes: a fake upstream killed by SIGKILL vanishes too.
    return [a for a in state.get("apps", []) if isinstance(a, dict) and _alive(int(a["pid"]))]


def _gpu_values(index: int, gpu: Gpu, used: int) -> dict[str, str]:
    total = int(gpu.get("memory_mib", 0))
    values: dict[str, str] = {
        "index": str(index),
        "name": str(gpu.get("name", "Fake GPU")),
        "uuid": _uuid(index),
        "pci.bus_id": _bus(index),
        "memory.total": str(total),
        "memory.used": str(used),
        "memory.free": str(max(total - used, 0)),
        "driver_version": DRIVER_VERSION,
        "count": "1",
        "temperature.gpu": "40",
        "utilization.gpu": "0",
        "utilization.memory": "0",
        "fan.speed": "30",
        "power.draw": "50.00",
        "power.limit": "300.00",
        "temperature.memory": _NA,
    }
    return values


_GPU_FIELDS = frozenset(_gpu_values(0, {}, 0))


def _app_values(app: Mapping[str, Any]) -> dict[str, str]:
    gpu = int(app.get("gpu", 0))
    return {
        "pid": str(app["pid"]),
        "used_memory": str(app["used_mib"]),
        "gpu_uuid": _uuid(gpu),
        "gpu_bus_id": _bus(gpu),
        "gpu_index": str(gpu),
        "process_name": str(app.get("name", "python")),
    }


_APP_FIELDS = frozenset(_app_values({"pid": 0, "used_mib": 0}))


def _format(fields: list[str], rows: list[list[str]], fmt: set[str]) -> str:
    units = "nounits" not in fmt
    lines = []
    if "noheader" not in fmt:
        header = [f + (" [MiB]" if f in _MEMORY_FIELDS and units else "") for f in fields]
        lines.append(", ".join(header))
    for row in rows:
        cells = [
            v + (_UNITS.get(f, "") if units and v != _NA else "")
            for f, v in zip(fields, row, strict=True)
        ]
        lines.append(", ".join(cells))
    return "".join(line + "\n" for line in lines)


def answer(argv: Sequence[str], state: Mapping[str, Any]) -> tuple[int, str]:
    """(exit status, output) of `nvidia-smi argv` for `state`. Pure but for pid liveness."""
    query: tuple[str, list[str]] | None = None
    fmt: set[str] = set()
    for arg in argv:
        if arg.startswith("--query-gpu="):
            query = ("gpu", arg.split("=", 1)[1].split(","))
        elif arg.startswith("--query-compute-apps="):
            query = ("apps", arg.split("=", 1)[1].split(","))
        elif arg.startswith("--format="):
            fmt = set(arg.split("=", 1)[1].split(","))
    if query is None:
        return 0, "fake nvidia-smi: only --query-gpu and --query-compute-apps are answered\n"
    kind, fields = query
    fields = [f.strip() for f in fields]
    valid = _GPU_FIELDS if kind == "gpu" else _APP_FIELDS
    for f in fields:
        if f not in valid:
            return 2, f'Field "{f}" is not a valid field to query.\n'
    if "csv" not in fmt:
        return 2, "fake nvidia-smi: only --format=csv is answered\n"
    apps = _live_apps(state)
    gpus = [g for g in state.get("gpus", []) if isinstance(g, dict)]
    if kind == "gpu":
        used = {
            i: sum(int(a["used_mib"]) for a in apps if int(a["gpu"]) == i) for i in range(len(gpus))
        }
        table = [_gpu_values(i, g, used[i]) for i, g in enumerate(gpus)]
    else:
        table = [_app_values(a) for a in apps]
    rows = [[values[f] for f in fields] for values in table]
    return 0, _format(fields, rows, fmt)


_BANNER = "ROCm System Management Interface"


def _rocm_cards(gpus: Sequence[Gpu], apps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    cards: dict[str, Any] = {}
    for i, gpu in enumerate(gpus):
        total = int(gpu.get("memory_mib", 0)) * _MIB
        used = sum(int(a["used_mib"]) for a in apps if int(a["gpu"]) == i) * _MIB
        cards[f"card{i}"] = {
            "Card series": str(gpu.get("name", "Fake GPU")),
            "Card model": "0x74a1",
            "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
            "Unique ID": f"0x{0xFA4E0000 + i:x}",
            "VRAM Total Memory (B)": str(total),
            "VRAM Total Used Memory (B)": str(used),
            "Temperature (Sensor edge) (C)": "40.0",
            "GPU use (%)": "0",
            "Fan speed (%)": "30",
            "Average Graphics Package Power (W)": "50.0",
            "Max Graphics Package Power (W)": "300.0",
        }
    cards["system"] = {"Driver version": ROCM_DRIVER_VERSION}
    return cards


def answer_rocm(argv: Sequence[str], state: Mapping[str, Any]) -> tuple[int, str]:
    """(exit status, output) of `rocm-smi argv` for `state`. Pure but for pid liveness."""
    apps = _live_apps(state)
    gpus = [g for g in state.get("gpus", []) if isinstance(g, dict)]
    flags = set(argv)
    per_pid: dict[int, list[Mapping[str, Any]]] = {}
    for app in apps:
        per_pid.setdefault(int(app["pid"]), []).append(app)
    if "--showpids" in flags and "--json" in flags:
        system = {
            f"PID{pid}": f"{uses[0].get('name', 'python')}, {len(uses)}, "
            f"{sum(int(u['used_mib']) for u in uses) * _MIB}, 0, 0"
            for pid, uses in sorted(per_pid.items())
        }
        return 0, json.dumps({"system": system} if system else {}) + "\n"
    if "--showpidgpus" in flags:
        lines = [f"{'=' * 28} {_BANNER} {'=' * 28}", f"{'=' * 34} GPUs Indexed by PID {'=' * 34}"]
        for pid, rows in sorted(per_pid.items()):
            lines.append(f"PID {pid} is using {len(rows)} DRM device(s):")
            lines.append(
                " ".join(str(int(r["gpu"])) for r in sorted(rows, key=lambda r: r["gpu"])) + " "
            )
        if not per_pid:
            lines.append("No KFD PIDs currently running")
        lines.append("=" * 90)
        return 0, "\n".join(lines) + "\n"
    if "--json" in flags:
        return 0, json.dumps(_rocm_cards(gpus, apps)) + "\n"
    return 0, "fake rocm-smi: only --json queries, --showpids and --showpidgpus are answered\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Answer one nvidia-smi (or, after `--rocm`, rocm-smi) invocation from the state file."""
    args = list(sys.argv[1:] if argv is None else argv)
    rocm = bool(args) and args[0] == "--rocm"
    tool = "rocm-smi" if rocm else "nvidia-smi"
    try:
        state = read_state()
    except RuntimeError as exc:
        print(f"fake {tool}: {exc}", file=sys.stderr)
        return 9  # nvidia-smi's "cannot communicate with the driver"
    status, out = answer_rocm(args[1:], state) if rocm else answer(args, state)
    (sys.stdout if status == 0 else sys.stderr).write(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
