"""P7: placement by memory vs hand-written groups, on a simulated trace (no processes).

Hardware: two fake GPUs, gpu0 24 GiB and gpu1 12 GiB. Five models of mixed sizes (below);
loading one takes 2 s + 1 s per GiB. The trace (seeded): requests one after another, 2 s
apart; each asks for the previous model with probability 0.5, else for a model drawn by
popularity; after a chat model's request, the embedding model follows with probability 0.3
(a RAG pattern).

Policies, each replaying the same trace:

* **placement**: `llamaswap.swap.placement.place` with each model's `resources.memory`;
  eviction cost from `eviction_cost` (load time weighted by recency).
* **best groups**: the `groups` config a user who knows the workload would write. Every
  llama-swap `groups` config that is safe on this hardware (each group pinned to a device
  with `CUDA_VISIBLE_DEVICES`, `swap: true, exclusive: false`, and the largest members of a
  device's groups fit together) is replayed with the scheduler's `GroupPolicy` on a long
  *training* trace from the same distribution (another seed, 5000 requests); the one with
  the fewest loads there is printed as YAML and replayed on the measured trace.
* **groups, hindsight**: the safe groups config with the fewest loads on the measured trace
  itself, which no one can write in advance: a lower bound for static configs.
* **one exclusive group**: llama-swap's default, one model at a time.

Reported: loads per policy on each of `--seeds` traces (seeds 1..N) and in total.

    python bench/p7_placement.py [--quick] [--requests N] [--seeds N]
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from llamaswap.config.model import GroupConfig
from llamaswap.swap.placement import Fit, Need, Resident, eviction_cost, place
from llamaswap.swap.policy import GroupPolicy

GIB = 1024**3
DEVICES = {"gpu0": 24 * GIB, "gpu1": 12 * GIB}
# model -> (GiB, popularity)
MODELS = {
    "chat-70b-q2": (18, 0.30),
    "coder-14b": (10, 0.25),
    "chat-8b": (6, 0.20),
    "vision-7b": (8, 0.10),
    "embed": (2, 0.15),
}
CHAT = ("chat-70b-q2", "coder-14b", "chat-8b")
GAP_S = 2.0
TRAINING = 5000


def load_seconds(model: str) -> float:
    return 2.0 + MODELS[model][0]


def make_trace(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names, weights = list(MODELS), [p for _, p in MODELS.values()]
    trace = [rng.choices(names, weights)[0]]
    while len(trace) < n:
        if trace[-1] in CHAT and rng.random() < 0.3:
            trace.append("embed")
        elif rng.random() < 0.5:
            trace.append(trace[-1])
        else:
            trace.append(rng.choices(names, weights)[0])
    return trace


@dataclass
class Result:
    policy: str
    loads: int
    load_s: float
    requests: int


# ---- policies ---------------------------------------------------------------------------------


def run_placement(trace: Sequence[str]) -> Result:
    resident: dict[str, str] = {}  # model -> device
    last_used: dict[str, float] = {}
    loads, load_s = 0, 0.0
    for i, model in enumerate(trace):
        now = i * GAP_S
        if model not in resident:
            residents = [
                Resident(
                    m,
                    {dev: MODELS[m][0] * GIB},
                    cost=eviction_cost(load_seconds(m), now - last_used[m]),
                )
                for m, dev in resident.items()
            ]
            decision = place(model, Need(MODELS[model][0] * GIB), DEVICES, residents)
            assert isinstance(decision, Fit), decision  # one request at a time: no leases
            for m in decision.evict:
                del resident[m]
            resident[model] = decision.devices[0]
            loads, load_s = loads + 1, load_s + load_seconds(model)
        last_used[model] = now
    return Result("placement", loads, load_s, len(trace))


def run_groups(trace: Sequence[str], name: str, groups: Mapping[str, GroupConfig]) -> Result:
    policy = GroupPolicy(groups)
    running: set[str] = set()
    loads, load_s = 0, 0.0
    for model in trace:
        if model not in running:
            running -= policy.evictions(model, frozenset(running))
            running.add(model)
            loads, load_s = loads + 1, load_s + load_seconds(model)
    return Result(name, loads, load_s, len(trace))


def _partitions(items: list[str]) -> Iterator[list[list[str]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def safe_group_configs() -> Iterator[tuple[dict[str, GroupConfig], dict[str, str]]]:
    """Every groups config that can never overfill a device: (groups, group -> device)."""
    for part in _partitions(list(MODELS)):
        for devices in itertools.product(DEVICES, repeat=len(part)):
            peak = dict.fromkeys(DEVICES, 0)
            for group, dev in zip(part, devices, strict=True):
                peak[dev] += max(MODELS[m][0] for m in group) * GIB
            if all(peak[d] <= DEVICES[d] for d in DEVICES):
                groups = {
                    f"g{i}": GroupConfig(swap=True, exclusive=False, members=sorted(g))
                    for i, g in enumerate(part)
                }
                yield groups, {f"g{i}": d for i, d in enumerate(devices)}


def best_groups(
    trace: Sequence[str], name: str
) -> tuple[Result, dict[str, GroupConfig], dict[str, str]]:
    best: tuple[Result, dict[str, GroupConfig], dict[str, str]] | None = None
    for groups, pins in safe_group_configs():
        result = run_groups(trace, name, groups)
        if best is None or (result.loads, result.load_s) < (best[0].loads, best[0].load_s):
            best = (result, groups, pins)
    assert best is not None
    return best


def groups_yaml(groups: Mapping[str, GroupConfig], pins: Mapping[str, str]) -> str:
    lines = ["groups:"]
    for name, g in groups.items():
        lines.append(
            f"  {name}: {{swap: true, exclusive: false, members: [{', '.join(g.members)}]}}"
            f"   # CUDA_VISIBLE_DEVICES={pins[name][-1]}"
        )
    return "\n".join(lines)


COLUMNS = ("seed", "placement", "best groups", "groups, hindsight", "one exclusive group")


def _row(label: str, loads: Sequence[int]) -> str:
    cells = [label.ljust(len(COLUMNS[0]))]
    cells += [str(v).rjust(len(c)) for v, c in zip(loads, COLUMNS[1:], strict=True)]
    return "| " + " | ".join(cells) + " |"


def run_seed(n: int, seed: int) -> tuple[list[Result], dict[str, GroupConfig], dict[str, str]]:
    """Every policy on the trace of `seed`; the groups config picked on its training trace."""
    trace = make_trace(n, seed)
    _, groups, pins = best_groups(make_trace(TRAINING, seed + 1000), "training")
    exclusive = {"all": GroupConfig(members=sorted(MODELS))}
    results = [
        run_placement(trace),
        run_groups(trace, "best groups", groups),
        best_groups(trace, "groups, hindsight")[0],
        run_groups(trace, "one exclusive group", exclusive),
    ]
    return results, groups, pins


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 requests, one seed")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=8, help="traces 1..N")
    args = parser.parse_args(argv)
    n, seeds = (100, 1) if args.quick else (args.requests, args.seeds)
    sizes = ", ".join(f"{m} {s} GiB" for m, (s, _) in MODELS.items())
    print(f"P7: {n} requests per trace; gpu0 24 GiB, gpu1 12 GiB; {sizes}\n")
    rows, totals = [], [0, 0, 0, 0]
    shown: tuple[dict[str, GroupConfig], dict[str, str]] | None = None
    for seed in range(1, seeds + 1):
        results, groups, pins = run_seed(n, seed)
        shown = shown or (groups, pins)
        rows.append(_row(str(seed), [r.loads for r in results]))
        totals = [t + r.loads for t, r in zip(totals, results, strict=True)]
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in COLUMNS) + "|")
    print("\n".join([*rows, _row("all", totals)]))
    assert shown is not None
    tried = sum(1 for _ in safe_group_configs())
    print(f"\nbest groups config for seed 1 ({tried} safe ones tried on its training trace):")
    print("```yaml\n" + groups_yaml(*shown) + "\n```")
    placed, grouped, hindsight, single = totals
    print(
        f"\nP7 summary: loads over {seeds} traces of {n} requests: placement {placed}, best "
        f"groups {grouped} (hindsight {hindsight}), one exclusive group {single}"
    )


if __name__ == "__main__":
    main()
