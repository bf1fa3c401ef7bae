"""Scheduler simulator: seeded traces replayed through the pure scheduler on a virtual clock.

No processes: `llamaswap.testing.simulator` carries out the scheduler's effects with modelled
times (2 s loads, 0.1 s stops, the trace's service times). Traces (`llamaswap.testing.sim_traces`):

* burst: 60 requests over ~6 s, each for one of three exclusive models, 1 s service;
* sustained: Poisson ~3 req/s for 60 s, 1 s service, the next request for the same model as
  the last with probability 0.65.

Each setup replays the same seeds (1..N); the tables show per-replay numbers averaged over
seeds (wait = arrival → grant), and the longest wait seen in any replay ("worst").

* "llama-swap (fifo, limit 10)": llama-swap's order and its `concurrencyLimit` admission
  (10 per model, waiting requests count, the excess gets 429 at once);
* "fifo": the same order, with llamaswap's queue admission (10 in flight, 256 may wait);
* "batch, maxWait N": the swap-minimising policy, with `maxWait` swept.

    python bench/simulate.py [--quick] [--seeds N] [--jobs N] [--plot docs/scheduler-tradeoff.png]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common

from llamaswap.config.model import DEFAULT_MAX_WAIT_S
from llamaswap.swap.rules import Admission, Policy
from llamaswap.testing.sim_traces import (
    LOAD_S,
    TRACES,
    RunStats,
    Summary,
    p99_floor,
    replay_seeds,
    summarise,
)
from llamaswap.testing.simulator import Setup

SWEEP = (2.0, 5.0, 7.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, math.inf)
LLAMA_SWAP = Setup(Policy.FIFO, admission=Admission.LIMIT)
FIFO = Setup(Policy.FIFO)
CHUNK = 25  # seeds per task: small enough to balance two workers


def batch(max_wait: float) -> Setup:
    return Setup(Policy.BATCH, max_wait=max_wait)


def run_all(setups: Sequence[Setup], seeds: int, jobs: int) -> dict[tuple[str, Setup], Summary]:
    tasks = [
        (trace, setup, range(lo, min(lo + CHUNK, seeds + 1)))
        for trace in TRACES
        for setup in setups
        for lo in range(1, seeds + 1, CHUNK)
    ]
    runs: dict[tuple[str, Setup], list[RunStats]] = {}
    with ProcessPoolExecutor(jobs) as pool:
        futures = [(t, s, pool.submit(replay_seeds, t, s, r)) for t, s, r in tasks]
        for trace, setup, future in futures:
            runs.setdefault((trace, setup), []).extend(future.result())
    return {key: summarise(stats) for key, stats in runs.items()}


def label(setup: Setup) -> str:
    if setup == LLAMA_SWAP:
        return "llama-swap (fifo, limit 10)"
    if setup.policy is Policy.FIFO:
        return "fifo"
    return f"batch, maxWait {wait_label(setup.max_wait)}"


def wait_label(max_wait: float) -> str:
    return "∞" if math.isinf(max_wait) else f"{max_wait:g} s"


def s(seconds: float) -> str:
    return f"{seconds:.1f}"


def print_policies(trace: str, results: dict[tuple[str, Setup], Summary]) -> None:
    rows = []
    for setup in (LLAMA_SWAP, FIFO, batch(DEFAULT_MAX_WAIT_S)):
        r = results[trace, setup]
        rows.append(
            [
                label(setup),
                f"{r.swaps:.1f}",
                s(r.p50),
                s(r.p99),
                s(r.max_wait),
                s(r.worst_wait),
                f"{r.refusals:.1f}",
                s(r.makespan),
                r.violations,
            ]
        )
    common.print_table(
        f"{trace}: policies ({results[trace, FIFO].runs} seeds; mean per replay)",
        [
            "setup",
            "swaps",
            "wait p50 s",
            "wait p99 s",
            "wait max s",
            "worst wait s",
            "refused (429)",
            "makespan s",
            "breaches",
        ],
        rows,
    )


def print_sweep(trace: str, results: dict[tuple[str, Setup], Summary]) -> None:
    fifo = results[trace, FIFO]
    rows = [
        [
            "fifo",
            f"{fifo.swaps:.1f}",
            "1.00",
            s(fifo.p99),
            "1.00",
            s(fifo.max_wait),
            s(fifo.worst_wait),
        ]
    ]
    for max_wait in SWEEP:
        r = results[trace, batch(max_wait)]
        rows.append(
            [
                f"batch, {wait_label(max_wait)}",
                f"{r.swaps:.1f}",
                f"{r.swaps / fifo.swaps:.2f}",
                s(r.p99),
                f"{r.p99 / fifo.p99:.2f}",
                s(r.max_wait),
                s(r.worst_wait),
            ]
        )
    common.print_table(
        f"{trace}: batch maxWait sweep",
        ["maxWait", "swaps", "÷ fifo", "wait p99 s", "÷ fifo", "wait max s", "worst wait s"],
        rows,
    )


def recommend(results: dict[tuple[str, Setup], Summary]) -> list[str]:
    """The maxWait values that meet issue 9's sustained targets, measured against fifo."""
    fifo = results["sustained", FIFO]
    swept = [(w, results["sustained", batch(w)]) for w in SWEEP]
    two_thirds = [w for w, r in swept if r.swaps <= fifo.swaps * 2 / 3 and r.p99 <= fifo.p99]
    half = [w for w, r in swept if r.swaps <= fifo.swaps / 2]
    best = min(swept, key=lambda item: item[1].swaps)
    return [
        "swaps ≤ 2/3 of fifo with p99 ≤ fifo's: "
        + (", ".join(wait_label(w) for w in two_thirds) or "no maxWait in the sweep"),
        "swaps ≤ 1/2 of fifo: "
        + (", ".join(wait_label(w) for w in half) or "no maxWait in the sweep"),
        f"fewest swaps: maxWait {wait_label(best[0])}, {best[1].swaps / fifo.swaps:.2f} of fifo",
    ]


def plot(path: Path, results: dict[tuple[str, Setup], Summary]) -> Path:
    """The trade-off curve (swaps vs wait, one point per maxWait), with matplotlib when it is
    installed, else as a plain SVG next to `path`."""
    try:
        import matplotlib  # noqa: PLC0415 - optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return _plot_svg(path.with_suffix(".svg"), results)
    fig, axes = plt.subplots(1, len(TRACES), figsize=(11, 4.2))
    for ax, trace in zip(axes, TRACES, strict=True):
        fifo = results[trace, FIFO]
        points = [(w, results[trace, batch(w)]) for w in SWEEP]
        xs = [r.swaps for _, r in points]
        ax.plot(xs, [r.p99 for _, r in points], "o-", label="batch: wait p99")
        ax.plot(xs, [r.max_wait for _, r in points], "s--", label="batch: wait max")
        for i, (text, r) in enumerate(point_labels(points)):
            # Alternate sides: neighbouring points of the curve are often close together.
            offset = (4, -11) if i % 2 == 0 else (-8, 6)
            align = "left" if i % 2 == 0 else "right"
            ax.annotate(
                text,
                (r.swaps, r.p99),
                textcoords="offset points",
                xytext=offset,
                ha=align,
                fontsize=7,
            )
        if trace == "sustained":
            span = sum(r.makespan for _, r in points) / len(points)
            grid = [x / 10 for x in range(int(min(xs) * 10) - 5, int(fifo.swaps * 10) + 10)]
            floor = [p99_floor(n, span, LOAD_S) for n in grid]
            ax.plot(grid, floor, ":", color="grey", label="p99 floor, any scheduler")
        ax.plot([fifo.swaps], [fifo.p99], "r*", markersize=12, label="fifo: wait p99")
        ax.plot([fifo.swaps], [fifo.max_wait], "rx", markersize=9, label="fifo: wait max")
        ax.set_title(f"{trace} ({fifo.runs} seeds, mean per replay)")
        ax.set_xlabel("swaps (loads)")
        ax.set_ylabel("wait s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("batch policy: swaps vs wait as maxWait grows (labels: maxWait)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def point_labels(points: Sequence[tuple[float, Summary]]) -> list[tuple[str, Summary]]:
    """One label per distinct point: maxWait values that give the same numbers share one."""
    labels: list[tuple[list[float], Summary]] = []
    for max_wait, r in points:
        if labels and (round(labels[-1][1].swaps, 1), round(labels[-1][1].p99, 1)) == (
            round(r.swaps, 1),
            round(r.p99, 1),
        ):
            labels[-1][0].append(max_wait)
        else:
            labels.append(([max_wait], r))
    return [
        (wait_label(ws[0]) if len(ws) == 1 else f"{wait_label(ws[0])}–{wait_label(ws[-1])}", r)
        for ws, r in labels
    ]


def _plot_svg(path: Path, results: dict[tuple[str, Setup], Summary]) -> Path:
    trace = "sustained"
    points = [results[trace, batch(w)] for w in SWEEP]
    fifo = results[trace, FIFO]
    xs = [r.swaps for r in [*points, fifo]]
    ys = [v for r in [*points, fifo] for v in (r.p99, r.max_wait)]
    x0, x1, y1 = min(xs) * 0.9, max(xs) * 1.1, max(ys) * 1.1

    def at(x: float, y: float) -> str:
        return f"{40 + (x - x0) / (x1 - x0) * 520:.1f},{320 - y / y1 * 280:.1f}"

    p99 = " ".join(at(r.swaps, r.p99) for r in points)
    worst = " ".join(at(r.swaps, r.max_wait) for r in points)
    fx, fy = at(fifo.swaps, fifo.p99).split(",")
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="360">'
        f'<text x="40" y="20">{trace}: batch swaps (x) vs wait p99 (blue) / max (grey)</text>'
        f'<polyline fill="none" stroke="blue" points="{p99}"/>'
        f'<polyline fill="none" stroke="grey" points="{worst}"/>'
        f'<circle cx="{fx}" cy="{fy}" r="5" fill="red"/></svg>\n'
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 seeds instead of --seeds")
    parser.add_argument("--seeds", type=int, default=200, help="traces per setup (default 200)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--plot", type=Path, help="write the trade-off curve here (PNG)")
    args = parser.parse_args()
    seeds = 40 if args.quick else args.seeds
    setups = [LLAMA_SWAP, FIFO, *(batch(w) for w in SWEEP)]
    started = time.perf_counter()
    results = run_all(setups, seeds, args.jobs)
    elapsed = time.perf_counter() - started
    print(
        f"Scheduler simulator — {len(TRACES) * len(setups) * seeds} replays "
        f"({seeds} seeds × {len(setups)} setups × {len(TRACES)} traces) in {elapsed:.1f}s "
        f"on {args.jobs} processes"
    )
    for trace in TRACES:
        print_policies(trace, results)
        print_sweep(trace, results)
    for line in recommend(results):
        print(f"sustained, batch: {line}")
    if args.plot is not None:
        print(f"plot: {plot(args.plot, results)}")


if __name__ == "__main__":
    main()
