"""P8: scheduling under a burst and under sustained load, through real proxies.

Three mutually exclusive models (one group, `swap` and `exclusive`) whose fake upstreams take
2 s to become healthy. Two seeded traces, replayed open loop (see replay.py):

* burst: 60 requests over ~6 s, each for one of the three models at random, 200 ms service;
* sustained: Poisson arrivals, ~3 req/s for 60 s, 1 s service, sticky model choice (the
  previous request's model again with p = 0.65).

Each trace runs against llamaswap with `routing.scheduler.policy: batch` (the default) and
`fifo`, otherwise default settings, and `fifo` with `concurrencyLimit` written (llama-swap's
admission); with `--baseline PATH`, against Go llama-swap with its
default settings and with `concurrencyLimit` raised so that it refuses nothing. The sustained
trace also runs llamaswap `batch` over a `maxWait` sweep (`--max-waits`).

Reported per run: refusals (429) and other errors, swaps (llamaswap: its "swap to" log lines;
llama-swap: models newly seen in /running, polled every 50 ms; both count the first load),
makespan (first arrival → last answer), wait (latency minus service time) p50 / p99 / max,
the machine's load average after the row (rows run one after another, and a busy machine
slows the upstreams' starts); then the targets of issue 9, each met or missed with its
numbers. `--keep-logs DIR` keeps each proxy's log and a timeline (requests sent with their
latency, /running changes) per row.

    python bench/p8_scheduling.py [--quick] [--baseline PATH] [--scenario burst|sustained]
                                  [--max-waits 5,20,30/15,60] [--repeat N] [--keep-logs DIR]
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
from replay import MODELS, Arrival, TraceResult, logged_swaps, make_trace, replay

from llamaswap.config.model import DEFAULT_MAX_WAIT_S

RAISED_LIMIT = 1000  # llama-swap's concurrencyLimit that refuses nothing on these traces


@dataclass(frozen=True)
class Scenario:
    name: str
    trace: list[Arrival]
    service_s: float
    load_s: float

    def describe(self) -> str:
        span = self.trace[-1].at - self.trace[0].at
        return (
            f"{len(self.trace)} requests over {span:.1f}s "
            f"({len(self.trace) / span:.1f} req/s), 3 exclusive models, "
            f"{self.load_s:g}s load, {self.service_s * 1000:.0f} ms service"
        )


@dataclass(frozen=True)
class Setup:
    """One row: which proxy, and what the generated config adds to the defaults."""

    label: str
    proxy: str  # "llamaswap" or "llama-swap"
    scheduler: dict[str, Any] = field(default_factory=dict)  # routing.scheduler (llamaswap)
    concurrency_limit: int | None = None  # None: not written (the proxy's default)
    max_wait: float | None = None  # the maxWait in force (llamaswap batch), for the targets

    @property
    def knobs(self) -> str:
        """`maxWait[/minResident]` of a batch row, e.g. `30s/15s`."""
        resident = self.scheduler.get("minResident")
        return f"{self.max_wait:g}s" + (f"/{resident}" if resident else "")

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.label).strip("-")


@dataclass(frozen=True)
class Rep:
    """One replay of a trace through one row's proxy."""

    result: TraceResult
    swaps: int
    load_avg: float  # the machine's 1-minute load average after it (others share the machine)


@dataclass
class Row:
    """A setup and its repetitions; the table and the targets use medians over them."""

    setup: Setup
    reps: list[Rep] = field(default_factory=list)

    def _median(self, value: Callable[[Rep], float]) -> float:
        return statistics.median(value(r) for r in self.reps)

    @property
    def swaps(self) -> float:
        return self._median(lambda r: r.swaps)

    @property
    def polled_swaps(self) -> float:
        return self._median(lambda r: r.result.polled_swaps)

    @property
    def refused(self) -> float:
        return self._median(lambda r: r.result.refused)

    @property
    def failed(self) -> float:
        """Refused or failed otherwise (median)."""
        return self._median(lambda r: r.result.errors)

    @property
    def makespan(self) -> float:
        return self._median(lambda r: r.result.makespan)

    def wait(self, q: float) -> float:
        return self._median(lambda r: common.percentile(r.result.waits, q))

    @property
    def p99(self) -> float:
        return self.wait(99)

    @property
    def max_wait(self) -> float:
        return self._median(lambda r: max(r.result.waits, default=math.nan))

    @property
    def load_avg(self) -> float:
        return self._median(lambda r: r.load_avg)

    def each(self, value: Callable[[Rep], float]) -> str:
        """The median, and every value when the repetitions differ: `4 (4/4/3)`."""
        values = [value(r) for r in self.reps]
        median = f"{statistics.median(values):g}"
        if len(set(values)) == 1:
            return median
        return f"{median} ({'/'.join(f'{v:g}' for v in values)})"


def scenarios(quick: bool, seed: int) -> dict[str, Scenario]:
    if quick:
        return {
            "burst": Scenario("burst", make_trace(12, 1.5, seed, stay=1 / 3), 0.2, 0.5),
            "sustained": Scenario("sustained", make_trace(15, 5.0, seed, stay=0.65), 0.2, 0.5),
        }
    return {
        "burst": Scenario("burst", make_trace(60, 6.0, seed, stay=1 / 3), 0.2, 2.0),
        "sustained": Scenario("sustained", make_trace(180, 60.0, seed, stay=0.65), 1.0, 2.0),
    }


Sweep = Sequence[tuple[float, float | None]]  # (maxWait, minResident or None: the default)


def parse_sweep(text: str) -> list[tuple[float, float | None]]:
    """`5,20,30/15`: maxWait values in seconds, each optionally with `/minResident`."""
    out: list[tuple[float, float | None]] = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        wait, _, resident = item.partition("/")
        out.append((float(wait), float(resident) if resident else None))
    return out


def sweep_setup(wait: float, resident: float | None) -> Setup:
    scheduler = {"maxWait": f"{wait:g}s"}
    label = f"llamaswap batch, maxWait {wait:g}s"
    if resident is not None:
        scheduler["minResident"] = f"{resident:g}s"
        label += f", minResident {resident:g}s"
    return Setup(label, "llamaswap", scheduler, max_wait=wait)


def setups(name: str, baseline: str | None, sweep: Sweep) -> list[Setup]:
    default_wait = f"maxWait {DEFAULT_MAX_WAIT_S:g}s"
    rows = [
        Setup(f"llamaswap batch ({default_wait})", "llamaswap", max_wait=DEFAULT_MAX_WAIT_S),
        Setup("llamaswap fifo", "llamaswap", {"policy": "fifo"}),
        # llama-swap's admission (reservations, no in-flight cap below the limit): the same
        # rules as the raised llama-swap row, to tell the policy from the admission
        Setup(
            f"llamaswap fifo (concurrencyLimit {RAISED_LIMIT})",
            "llamaswap",
            {"policy": "fifo"},
            concurrency_limit=RAISED_LIMIT,
        ),
    ]
    if baseline:
        rows += [
            Setup("llama-swap HEAD (default)", "llama-swap"),
            Setup(
                f"llama-swap HEAD (concurrencyLimit {RAISED_LIMIT})",
                "llama-swap",
                concurrency_limit=RAISED_LIMIT,
            ),
        ]
    if name == "sustained":
        rows += [sweep_setup(w, r) for w, r in sweep if (w, r) != (DEFAULT_MAX_WAIT_S, None)]
    return rows


def run_one(
    scenario: Scenario,
    setup: Setup,
    baseline: str | None,
    work: Path,
    procs: list[common.Proc],
    keep_logs: Path | None,
) -> Rep:
    """A fresh proxy (and fresh upstream ports) for one row, replay, stop."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-{setup.slug}-", dir=work))
    specs = [common.ModelSpec(m, startup_delay=scenario.load_s) for m in MODELS]
    groups = {"chat": {"swap": True, "exclusive": True, "members": list(MODELS)}}
    # llama-swap's key too: millisecond timestamps line the log up with the requests
    extra: dict[str, Any] = {"logTimeFormat": "stampmilli"}
    if setup.scheduler:
        extra["routing"] = {"scheduler": setup.scheduler}
    config = common.write_config(
        run_dir, specs, groups, extra, concurrency_limit=setup.concurrency_limit
    )
    binary = common.llamaswap_argv() if setup.proxy == "llamaswap" else [str(baseline)]
    proxy = common.start_proxy(setup.proxy, binary, config, run_dir)
    procs.append(proxy.proc)
    try:
        result = asyncio.run(replay(proxy.url, scenario.trace, scenario.service_s))
    finally:
        proxy.proc.stop()
    if keep_logs is not None:
        keep(keep_logs / f"{scenario.name}-{setup.slug}", proxy.proc.log_path, result)
    ours = setup.proxy == "llamaswap"
    swaps = logged_swaps(proxy.proc.log_path) if ours else result.polled_swaps
    return Rep(result, swaps, os.getloadavg()[0])


def keep(stem: Path, log: Path, result: TraceResult) -> None:
    """The proxy's log, and one line per request (wall-clock send and answer times, s) and
    per change of /running, in time order: enough to reconstruct what the scheduler did."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(log, stem.with_name(stem.name + ".log"))
    events = [
        (r.sent, f"sent\t{r.model}\t{r.done - r.sent:.3f}\t{r.status}") for r in result.requests
    ]
    events += [(at, f"running\t{states}") for at, states in result.timeline]
    events.sort()
    start = events[0][0] if events else 0.0
    lines = [f"{at - start:8.3f}\t{what}" for at, what in events]
    stem.with_name(stem.name + ".timeline.tsv").write_text("\n".join(lines) + "\n")


def print_rows(scenario: Scenario, rows: Sequence[Row], repeat: int) -> None:
    def s(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.2f}"

    cells = [
        [
            r.setup.label,
            len(scenario.trace),
            r.each(lambda p: p.result.refused),
            r.each(lambda p: p.result.errors - p.result.refused),
            r.each(lambda p: p.swaps),
            f"{r.polled_swaps:g}",
            f"{r.makespan:.1f}",
            s(r.wait(50)),
            s(r.p99),
            s(r.max_wait),
            f"{r.load_avg:.1f}",
        ]
        for r in rows
    ]
    medians = f" (medians of {repeat} interleaved runs)" if repeat > 1 else ""
    common.print_table(
        f"{scenario.name}: {scenario.describe()}{medians}",
        [
            "proxy",
            "requests",
            "refused (429)",
            "other errors",
            "swaps",
            "swaps (/running)",
            "makespan s",
            "wait p50 s",
            "wait p99 s",
            "wait max s",
            "load avg",
        ],
        cells,
    )


@dataclass
class Targets:
    """Issue 9's targets as rows (target, measured, met); a missed one names its numbers."""

    rows: list[list[str]] = field(default_factory=list)

    def check(self, target: str, measured: str, met: bool) -> None:
        self.rows.append([target, measured, "met" if met else "MISSED"])

    @property
    def met(self) -> int:
        return sum(1 for r in self.rows if r[2] == "met")


def check_burst(runs: dict[str, Row], t: Targets) -> None:
    ours = next(r for r in runs.values() if r.setup.max_wait == DEFAULT_MAX_WAIT_S)
    failed = ours.failed
    t.check("burst: 0 refusals (batch)", f"{failed:g} refused or failed", failed == 0)
    head = runs.get("llama-swap HEAD (default)")
    if head is None:
        return
    t.check(
        "burst: swaps ≤ HEAD's",
        f"{ours.swaps:g} vs {head.swaps:g}",
        ours.swaps <= head.swaps,
    )
    t.check(
        "burst: makespan ≤ HEAD's",
        f"{ours.makespan:.1f}s vs {head.makespan:.1f}s",
        ours.makespan <= head.makespan,
    )


def check_sustained(runs: dict[str, Row], load_s: float, t: Targets) -> None:
    batch = [r for r in runs.values() if r.setup.max_wait is not None]
    ours = next(r for r in batch if r.setup.max_wait == DEFAULT_MAX_WAIT_S)
    failed = ours.failed
    t.check("sustained: 0 refusals (batch)", f"{failed:g} refused or failed", failed == 0)
    bound = DEFAULT_MAX_WAIT_S + load_s
    t.check(
        f"sustained: max wait ≤ maxWait + load ({bound:g}s)",
        f"{ours.max_wait:.2f}s",
        ours.max_wait <= bound,
    )
    head = runs.get(f"llama-swap HEAD (concurrencyLimit {RAISED_LIMIT})")
    if head is None:
        return
    t.check(
        "sustained: swaps ≤ 2/3 of HEAD's (raised limits)",
        f"{ours.swaps:g} vs {head.swaps:g} (≤ {head.swaps * 2 / 3:.1f})",
        ours.swaps * 3 <= head.swaps * 2,
    )
    t.check(
        "sustained: p99 wait ≤ HEAD's (raised limits)",
        f"{ours.p99:.2f}s vs {head.p99:.2f}s",
        ours.p99 <= head.p99,
    )
    halving = sorted(
        (r for r in batch if r.swaps * 2 <= head.swaps and r.failed == 0),
        key=lambda r: r.setup.max_wait or 0.0,
    )
    tried = ", ".join(f"{r.setup.knobs}: {r.swaps:g}" for r in batch)
    t.check(
        "sustained: a maxWait with swaps ≤ 1/2 of HEAD's",
        (f"maxWait {halving[0].setup.knobs}" if halving else "none")
        + f" (≤ {head.swaps / 2:.1f}; swaps by maxWait[/minResident] {tried})",
        bool(halving),
    )


def baseline_version(baseline: str | None) -> str:
    if not baseline:
        return ""
    try:
        out = subprocess.run(
            [baseline, "-version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return baseline
    return f"{baseline}: {' '.join(out.split())}"


def main() -> None:
    parser = common.base_parser(__doc__ or "")
    parser.add_argument("--scenario", choices=["burst", "sustained"], action="append")
    parser.add_argument(
        "--max-waits",
        default=None,
        help="sustained: maxWait values (s) for llamaswap batch, comma-separated, each "
        "optionally with /minResident (s), e.g. 20,30/15 (default 5,20,30,60; none with --quick)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of every row, interleaved (medians shown)"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy each proxy's log into DIR")
    args = parser.parse_args()
    sweep = args.max_waits if args.max_waits is not None else ("" if args.quick else "5,20,30,60")
    max_waits = parse_sweep(sweep)
    baselines = common.baseline_binary(args.baseline)
    baseline = baselines[0] if baselines else None  # the targets are stated against one build
    chosen = scenarios(args.quick, args.seed)
    names = args.scenario or list(chosen)
    print(f"P8 scheduling — {common.machine_note()}; seed {args.seed}")
    notes = [] if baseline else ["llama-swap: not on PATH and no --baseline given: rows skipped"]
    if baseline:
        notes.append(f"baseline {baseline_version(baseline)}")
    if len(baselines) > 1:
        notes.append("P8 compares with the first --baseline only")

    targets = Targets()
    with common.workspace("p8") as (work, procs):
        for name in names:
            scenario = chosen[name]
            rows = {setup.label: Row(setup) for setup in setups(name, baseline, max_waits)}
            # interleaved, so that a change in the machine's load touches every row alike
            for rep in range(args.repeat):
                for row in rows.values():
                    keep_dir = args.keep_logs / f"rep{rep + 1}" if args.keep_logs else None
                    row.reps.append(run_one(scenario, row.setup, baseline, work, procs, keep_dir))
            print_rows(scenario, list(rows.values()), args.repeat)
            if name == "burst":
                check_burst(rows, targets)
            else:
                check_sustained(rows, scenario.load_s, targets)

    common.print_table("Targets (issue 9)", ["target", "measured", "met"], targets.rows)
    common.print_summary(
        "P8",
        f"{targets.met} of {len(targets.rows)} targets met"
        + "".join(f"; missed: {r[0]} ({r[1]})" for r in targets.rows if r[2] != "met"),
        notes,
        baseline is not None,
    )


if __name__ == "__main__":
    main()
