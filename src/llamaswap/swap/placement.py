"""Placement by memory: on which device(s) a model goes, and which idle models make room. Pure.

`place` takes the devices' capacities, the models resident on them (per-device usage, whether
a request holds them, what evicting them costs) and the target's need, and decides:

1. The target is already resident → `Fit` on its devices, nothing evicted.
2. Candidates: each allowed device for a one-device need; the given devices for a split need.
   A candidate asking more of a device than it has can never work. No candidate works →
   `NeverFits` (the need is larger than the device(s)).
3. Per candidate, the deficit per device is need − (capacity − used). No deficit: a free fit.
   Else the cheapest set of *idle* residents whose usage on the deficit devices covers every
   deficit (a split resident frees memory on each of its devices).
4. The cheapest candidate wins; ties go to fewer evictions, then to the tightest fit (the
   least memory left over, so large holes stay for large models), then to device name.
5. No candidate can be made to fit with idle models alone, but one can if leased models went
   too → `Wait`, naming the leased blockers and the `Fit` to carry out once they are released
   (it evicts as few leased models as possible, then the cheapest set).

The eviction set is of minimum total cost (exact search below `EXACT_LIMIT` helpful residents,
greedy beyond, then pruned); with positive costs no member can be dropped and still fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_HALF_LIFE",
    "EXACT_LIMIT",
    "Decision",
    "Fit",
    "Need",
    "NeverFits",
    "Resident",
    "Wait",
    "eviction_cost",
    "place",
]

EXACT_LIMIT = 18  # residents on the short devices; 2**18 subsets at worst, pruned hard
DEFAULT_HALF_LIFE = 600.0  # seconds of idleness that halve the weight of a model's load time
_MIN_COST = 1e-9  # costs are kept positive so that a cheapest set is also a minimal one
_LEASED_PENALTY = 1e12  # a leased model counts as this much more: evict as few as possible


@dataclass(frozen=True)
class Need:
    """What the target needs: bytes on one device (among `devices`, empty = any), or a map
    device -> bytes for a model split over devices."""

    memory: int | Mapping[str, int]
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resident:
    """A model holding device memory now (loaded, or starting)."""

    model: str
    usage: Mapping[str, int]
    leased: bool = False
    cost: float = 1.0


@dataclass(frozen=True)
class Fit:
    """Start the target on `devices` after evicting `evict` (sorted; maybe empty)."""

    devices: tuple[str, ...]
    evict: tuple[str, ...] = ()
    cost: float = 0.0


@dataclass(frozen=True)
class Wait:
    """Only leased models stand in the way; `then` is the fit once `blockers` are released."""

    blockers: tuple[str, ...]
    then: Fit = field(compare=False)


@dataclass(frozen=True)
class NeverFits:
    """The need exceeds the device(s) it may use, whatever is evicted."""

    reason: str


Decision = Fit | Wait | NeverFits


def eviction_cost(
    load_seconds: float,
    idle_seconds: float,
    evict_cost: float = 1.0,
    half_life: float = DEFAULT_HALF_LIFE,
) -> float:
    """What evicting a model costs: its `evict_costs` entry plus the time to bring it back
    (load time, or wake time for a model put to sleep), weighted by how likely it is to be
    asked for again soon: a model used just now counts in full, one idle for `half_life`
    seconds half as much."""
    recency = 0.5 ** (max(idle_seconds, 0.0) / half_life) if half_life > 0 else 0.0
    return max(evict_cost, 0.0) + max(load_seconds, 0.0) * recency


def place(
    target: str,
    need: Need,
    capacity: Mapping[str, int],
    residents: Sequence[Resident],
) -> Decision:
    """Decide where `target` goes (see the module docstring for the steps)."""
    own = next((r for r in residents if r.model == target), None)
    if own is not None:
        return Fit(tuple(sorted(d for d, b in own.usage.items() if b > 0)))
    others = [r for r in residents if r.model != target]
    demands = _candidates(need, capacity)
    feasible = [d for d in demands if all(b <= capacity[dev] for dev, b in d.items())]
    if not feasible:
        return NeverFits(_never_reason(need, capacity))
    fits: list[tuple[tuple[float, int, int, tuple[str, ...]], Fit]] = []
    waits: list[tuple[tuple[float, int, int, tuple[str, ...]], Fit]] = []
    for demand in feasible:
        deficit = _deficit(demand, capacity, others)
        idle = [r for r in others if not r.leased]
        chosen = _cover(deficit, idle, leased_penalty=False)
        bucket = fits
        if chosen is None:
            chosen = _cover(deficit, others, leased_penalty=True)
            bucket = waits
        if chosen is None:  # cannot happen: demand <= capacity, so evicting all suffices
            continue
        cost = sum(max(r.cost, _MIN_COST) for r in chosen)
        freed = {dev: sum(r.usage.get(dev, 0) for r in chosen) for dev in demand}
        left = sum(-deficit.get(dev, 0) + freed[dev] for dev in demand)
        devices = tuple(sorted(demand))
        key = (sum(_cost(r) for r in chosen), len(chosen), left, devices)
        bucket.append((key, Fit(devices, tuple(sorted(r.model for r in chosen)), cost)))
    if fits:
        return min(fits, key=lambda kv: kv[0])[1]
    best = min(waits, key=lambda kv: kv[0])[1]
    leased = {r.model for r in others if r.leased}
    return Wait(tuple(m for m in best.evict if m in leased), best)


def _candidates(need: Need, capacity: Mapping[str, int]) -> list[dict[str, int]]:
    if not isinstance(need.memory, int):
        split = dict(need.memory)
        return [split] if all(dev in capacity for dev in split) else []
    allowed = need.devices or tuple(capacity)
    return [{dev: need.memory} for dev in allowed if dev in capacity]


def _never_reason(need: Need, capacity: Mapping[str, int]) -> str:
    if not isinstance(need.memory, int):
        missing = [d for d in need.memory if d not in capacity]
        if missing:
            return f"needs unknown device(s) {', '.join(missing)}"
        over = [d for d, b in need.memory.items() if b > capacity[d]]
        return f"needs more than {', '.join(over)} has"
    allowed = [d for d in (need.devices or tuple(capacity)) if d in capacity]
    if not allowed:
        return f"none of its devices ({', '.join(need.devices)}) exists"
    largest = max(capacity[d] for d in allowed)
    return f"needs {need.memory} bytes on one device; the largest it may use has {largest}"


def _deficit(
    demand: Mapping[str, int], capacity: Mapping[str, int], residents: Sequence[Resident]
) -> dict[str, int]:
    """Bytes still missing per device of `demand` (negative: to spare)."""
    used = {dev: sum(r.usage.get(dev, 0) for r in residents) for dev in demand}
    return {dev: b - (capacity[dev] - used[dev]) for dev, b in demand.items()}


def _cost(r: Resident) -> float:
    return max(r.cost, _MIN_COST) + (_LEASED_PENALTY if r.leased else 0.0)


def _cover(
    deficit: Mapping[str, int], pool: Sequence[Resident], *, leased_penalty: bool
) -> list[Resident] | None:
    """The cheapest subset of `pool` freeing at least `deficit` on every device, or None."""
    short = {dev: b for dev, b in deficit.items() if b > 0}
    if not short:
        return []
    useful = [r for r in pool if any(r.usage.get(dev, 0) > 0 for dev in short)]
    if not leased_penalty:
        useful = [r for r in useful if not r.leased]
    if any(sum(r.usage.get(dev, 0) for r in useful) < b for dev, b in short.items()):
        return None
    useful.sort(key=lambda r: (_cost(r), r.model))
    if len(useful) > EXACT_LIMIT:
        return _greedy(short, useful)
    return _exact(short, useful)


def _exact(short: Mapping[str, int], useful: Sequence[Resident]) -> list[Resident]:
    devices = list(short)
    # rest[i][k]: what residents i.. could still free on device k (a feasibility bound).
    rest = [[0] * len(devices) for _ in range(len(useful) + 1)]
    for i in range(len(useful) - 1, -1, -1):
        rest[i] = [rest[i + 1][k] + useful[i].usage.get(d, 0) for k, d in enumerate(devices)]
    best: list[int] = []
    best_cost = float("inf")
    chosen: list[int] = []

    def search(i: int, missing: list[int], cost: float) -> None:
        nonlocal best, best_cost
        if cost >= best_cost:
            return
        if all(m <= 0 for m in missing):
            best, best_cost = list(chosen), cost
            return
        if i == len(useful) or any(m > r for m, r in zip(missing, rest[i], strict=True)):
            return
        r = useful[i]
        chosen.append(i)
        search(
            i + 1,
            [m - r.usage.get(d, 0) for m, d in zip(missing, devices, strict=True)],
            cost + _cost(r),
        )
        chosen.pop()
        search(i + 1, missing, cost)

    search(0, [short[d] for d in devices], 0.0)
    return [useful[i] for i in best]


def _greedy(short: Mapping[str, int], useful: Sequence[Resident]) -> list[Resident]:
    missing = dict(short)
    picked: list[Resident] = []

    def value(r: Resident) -> float:
        freed = sum(min(r.usage.get(d, 0), m) for d, m in missing.items() if m > 0)
        return _cost(r) / freed if freed > 0 else float("inf")

    pool = list(useful)
    while any(m > 0 for m in missing.values()):
        r = min(pool, key=value)
        pool.remove(r)
        picked.append(r)
        missing = {d: m - r.usage.get(d, 0) for d, m in missing.items()}
    # Drop what is no longer needed, dearest first, so the set stays minimal.
    for r in sorted(picked, key=_cost, reverse=True):
        rest = [p for p in picked if p is not r]
        if all(sum(p.usage.get(d, 0) for p in rest) >= b for d, b in short.items()):
            picked = rest
    return picked
