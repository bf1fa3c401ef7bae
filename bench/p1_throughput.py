"""P1: small non-streaming chat requests at c=1, 16, 64 — upstream direct vs through the proxy.

The same fake upstream process answers both columns (llamaswap starts it; "direct" talks to
its port). Load comes from wrk with bench/chat_post.lua when wrk is installed, else from the
aiohttp generator in common.py spread over several processes. Either way the generator's own
ceiling is reported (its rate against the bare upstream, and CPU seconds of each party), so a
reader can tell who the bottleneck was.

    python bench/p1_throughput.py [--quick] [--baseline PATH] [--generator wrk|python]
                                  [--profile OUT.txt [--profile-c C]]
"""

from __future__ import annotations

import collections
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import common

MODEL = "m1"


@dataclass
class Row:
    target: str
    concurrency: int
    rps: float
    p50: float
    p99: float
    errors: int
    cpu: dict[str, float]


def run_load(
    generator: str, url: str, concurrency: int, duration: float
) -> tuple[float, float, float, int]:
    endpoint = f"{url}/v1/chat/completions"
    if generator == "wrk":
        w = common.wrk_load(endpoint, concurrency, duration)
        return w.rps, w.p50, w.p99, w.errors
    processes = 1 if concurrency == 1 else 2
    r = common.python_load(endpoint, common.CHAT_BODY, concurrency, duration, processes)
    return r.rps, r.p(50), r.p(99), r.errors


def measure(
    generator: str, target: str, url: str, concurrency: int, duration: float, pids: dict[str, int]
) -> Row:
    """One load run; CPU is reported in cores (CPU seconds per wall second) per party."""
    before = {name: common.cpu_seconds([pid]) for name, pid in pids.items()}
    gen_before = _generator_cpu()
    sys_before = common.system_cpu()
    t0 = time.perf_counter()
    rps, p50, p99, errors = run_load(generator, url, concurrency, duration)
    wall = time.perf_counter() - t0
    cpu = {name: (common.cpu_seconds([pid]) - before[name]) / wall for name, pid in pids.items()}
    cpu["generator"] = (_generator_cpu() - gen_before) / wall
    cpu["machine busy"] = common.busy_fraction(sys_before, common.system_cpu())
    return Row(target, concurrency, rps, p50, p99, errors, cpu)


def _cpu_per_request(row: Row) -> str:
    """The proxy's CPU time per request (its cores ÷ req/s): steadier than req/s on a shared
    machine, since it does not depend on how much CPU the proxy was given."""
    cores = row.cpu.get("proxy")
    if cores is None or not row.rps or math.isnan(row.rps):
        return "-"
    return f"{cores / row.rps * 1e6:.0f}"


def _generator_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk, forked generator workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def py_spy_argv(pid: int, seconds: float, out: Path) -> list[str] | None:
    """py-spy record (raw collapsed stacks) of `pid`, or None when py-spy is missing."""
    py_spy = shutil.which("py-spy") or str(Path(common.venv_python()).parent / "py-spy")
    if not Path(py_spy).exists():
        return None
    argv = [py_spy, "record", "--pid", str(pid), "--duration", f"{max(1, int(seconds))}"]
    return [*argv, "--format", "raw", "--rate", "200", "--nonblocking", "-o", str(out)]


def summarise_profile(path: Path, top: int = 20) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) from a py-spy raw file, by self time."""
    selfs: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        selfs[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if not total:
        return []
    return [(f, 100.0 * n / total, 100.0 * incl[f] / total) for f, n in selfs.most_common(top)]


def _short(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    func, file = match.groups()
    parts = Path(file).parts
    tail = "/".join(
        parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
    )
    return f"{func} ({tail})"


def main() -> None:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--profile", metavar="OUT", help="py-spy llamaswap during one run")
    p.add_argument(
        "--profile-c", type=int, default=64, metavar="C", help="the run --profile records (c=C)"
    )
    args = p.parse_args()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if common.have_wrk() else "python"
    duration = 1.0 if args.quick else 5.0
    levels = (1, 16, 64)
    baseline = common.baseline_binary(args.baseline)
    print(f"P1 throughput — {common.machine_note()}; generator: {generator}; {duration:g}s/run")

    rows: list[Row] = []
    notes: list[str] = []
    ceiling: list[tuple[str, float]] = []
    profile_rows: list[tuple[str, float, float]] = []
    with common.workspace("p1") as (work, procs):
        spec = common.ModelSpec(MODEL)
        config = common.write_config(work, [spec])
        direct_done = False
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            status, _ = common.http_post(f"{proxy.url}/v1/chat/completions", common.CHAT_BODY)
            if status != 200:
                raise SystemExit(f"{label}: warm-up request failed with {status}")
            pids = {"proxy": proxy.proc.pid}
            import psutil  # noqa: PLC0415

            upstream = [c.pid for c in psutil.Process(proxy.proc.pid).children(recursive=True)]
            pids_up = {"upstream": upstream[0]} if upstream else {}
            if not direct_done:
                for c in levels:
                    run_load(generator, spec.url, c, min(duration, 1.0))  # warm-up
                    rows.append(measure(generator, "direct", spec.url, c, duration, pids_up))
                direct_done = True
            for c in levels:
                spy: subprocess.Popen[bytes] | None = None
                if args.profile and label == "llamaswap" and c == args.profile_c:
                    argv = py_spy_argv(proxy.proc.pid, duration, Path(args.profile))
                    if argv is None:
                        notes.append("py-spy not installed: `.venv/bin/pip install py-spy`")
                    else:
                        notes.append("profile: " + " ".join(argv))
                        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                rows.append(measure(generator, label, proxy.url, c, duration, {**pids, **pids_up}))
                if spy is not None:
                    spy.wait(60)
                    profile_rows = summarise_profile(Path(args.profile))
            if generator == "python":
                # the generator's own ceiling against the bare upstream, 1 and 3 processes
                for n in (1, 3):
                    r = common.python_load(
                        f"{spec.url}/v1/chat/completions", common.CHAT_BODY, 64, duration, n
                    )
                    ceiling.append((f"python generator, {n} process(es), c=64 → direct", r.rps))
            elif common.have_wrk():
                r = common.python_load(
                    f"{spec.url}/v1/chat/completions", common.CHAT_BODY, 64, duration, 2
                )
                ceiling.append(("python generator, 2 processes, c=64 → direct", r.rps))
            proxy.proc.stop()

    direct = {r.concurrency: r for r in rows if r.target == "direct"}
    table = []
    for r in rows:
        base = direct[r.concurrency]
        busy = r.cpu.pop("machine busy")
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.cpu.items()))
        table.append(
            [
                r.target,
                r.concurrency,
                f"{r.rps:.0f}",
                common.ms(r.p50),
                common.ms(r.p99),
                common.ratio(r.rps, base.rps),
                r.errors,
                f"{busy * 100:.0f}%",
                _cpu_per_request(r),
                cpu,
            ]
        )
    common.print_table(
        "Non-streaming chat completions",
        [
            "target",
            "c",
            "req/s",
            "p50 ms",
            "p99 ms",
            "req/s ÷ direct",
            "errors",
            "2-core busy",
            "proxy CPU µs/req",
            "CPU cores (per process)",
        ],
        table,
    )
    if ceiling:
        common.print_table(
            "Load generator ceiling (it is not the bottleneck when this is well above the"
            " proxy's req/s)",
            ["generator", "req/s"],
            [[name, f"{v:.0f}"] for name, v in ceiling],
        )
    if profile_rows:
        common.print_table(
            f"py-spy: llamaswap at c={args.profile_c}, top functions by own time ({args.profile})",
            ["function", "self %", "inclusive %"],
            [[f, f"{s:.1f}", f"{i:.1f}"] for f, s, i in profile_rows],
        )
    summary = []
    for c in levels:
        ours = next((r for r in rows if r.target == "llamaswap" and r.concurrency == c), None)
        if ours is not None:
            summary.append(
                f"c={c} {ours.rps:.0f} req/s ({common.ratio(ours.rps, direct[c].rps)}× direct,"
                f" {_cpu_per_request(ours)} µs CPU/req)"
            )
    compared = common.compared(r.target for r in rows)
    common.print_summary("P1", "llamaswap " + ", ".join(summary), notes, compared)
    if any(math.isnan(r.rps) for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
