"""Seeded arrival traces for the scheduler simulator, and averages over many replays.

* `burst`: 60 requests over ~6 s (Poisson arrivals), each for one of three models drawn
  uniformly; 2 s loads. The shape of issue 9's burst: more work arrives during one load
  than a model's in-flight limit.
* `sustained`: Poisson arrivals at ~3 req/s for 60 s, 1 s service; each request asks for the
  previous request's model with probability `stay` (0.65), else for one of the others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from llamaswap.testing.simulator import Arrival, Result, Setup, Trace, simulate

MODELS = ("alpha", "beta", "gamma")
LOAD_S = 2.0


def burst(
    seed: int, *, requests: int = 60, span: float = 6.0, service: float = 1.0, load: float = LOAD_S
) -> Trace:
    rng = random.Random(seed)
    t, arrivals = 0.0, []
    for _ in range(requests):
        t += rng.expovariate(requests / span)
        arrivals.append(Arrival(t, rng.choice(MODELS), service))
    return Trace(tuple(arrivals), dict.fromkeys(MODELS, load))


def sustained(
    seed: int,
    *,
    rate: float = 3.0,
    duration: float = 60.0,
    service: float = 1.0,
    stay: float = 0.65,
    load: float = LOAD_S,
) -> Trace:
    rng = random.Random(seed)
    t, model, arrivals = 0.0, rng.choice(MODELS), []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        if rng.random() >= stay:
            model = rng.choice([m for m in MODELS if m != model])
        arrivals.append(Arrival(t, model, service))
    return Trace(tuple(arrivals), dict.fromkeys(MODELS, load))


TRACES: dict[str, Callable[[int], Trace]] = {"burst": burst, "sustained": sustained}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), as `bench/common.py` computes it; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p99_floor(swaps: float, span: float, load: float, models: int = 3) -> float:
    """The least p99 wait any scheduler can reach with `swaps` loads of `load` seconds over
    `span` seconds, when `models` exclusive models are asked for at equal, steady rates (the
    sustained trace): the models are away for at least (models - 1)·span + swaps·load in
    all, over `swaps` absences; equal absences make the fewest long waits, and 1 % of the
    requests then wait at least (models - 1 - 0.01·models)·span/swaps + load.
    docs/benchmarks.md derives it."""
    return (models - 1 - 0.01 * models) * span / swaps + load


@dataclass(frozen=True)
class RunStats:
    """The numbers of one replay (waits in seconds; a run that granted nothing waited 0)."""

    swaps: int
    p50: float
    p99: float
    max_wait: float
    refusals: int
    makespan: float
    violations: int


def run_stats(result: Result) -> RunStats:
    waits = result.waits or [0.0]
    return RunStats(
        swaps=result.loads,
        p50=percentile(waits, 50),
        p99=percentile(waits, 99),
        max_wait=max(waits),
        refusals=result.refusals,
        makespan=result.makespan,
        violations=len(result.violations) + result.unanswered,
    )


@dataclass(frozen=True)
class Summary:
    """Per-replay numbers averaged over replays; `worst_wait` is the longest wait of all, and
    `violations` counts lease-rule breaches and unanswered requests over all replays."""

    runs: int
    swaps: float
    p50: float
    p99: float
    max_wait: float
    worst_wait: float
    refusals: float
    makespan: float
    violations: int


def summarise(runs: Iterable[RunStats]) -> Summary:
    rows = list(runs)
    n = max(1, len(rows))

    def mean(values: Iterable[float]) -> float:
        return sum(values) / n

    return Summary(
        runs=len(rows),
        swaps=mean(r.swaps for r in rows),
        p50=mean(r.p50 for r in rows),
        p99=mean(r.p99 for r in rows),
        max_wait=mean(r.max_wait for r in rows),
        worst_wait=max((r.max_wait for r in rows), default=0.0),
        refusals=mean(r.refusals for r in rows),
        makespan=mean(r.makespan for r in rows),
        violations=sum(r.violations for r in rows),
    )


def replay_seeds(trace: str, setup: Setup, seeds: Iterable[int]) -> list[RunStats]:
    """Replay the named trace generator (`TRACES`) once per seed."""
    make = TRACES[trace]
    return [run_stats(simulate(make(seed), setup)) for seed in seeds]
