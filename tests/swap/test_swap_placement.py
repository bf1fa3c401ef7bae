"""Placement by memory: fit, eviction choice, never evicting a leased model, never-fits."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.swap.placement import (
    EXACT_LIMIT,
    Fit,
    Need,
    NeverFits,
    Resident,
    Wait,
    eviction_cost,
    place,
)

G = 1024**3
TWO = {"gpu0": 24 * G, "gpu1": 12 * G}


def res(model: str, leased: bool = False, cost: float = 1.0, **usage: int) -> Resident:
    return Resident(model, {dev: gib * G for dev, gib in usage.items()}, leased, cost)


def test_empty_devices_take_the_tightest_fit() -> None:
    assert place("m", Need(10 * G), TWO, []) == Fit(("gpu1",))
    assert place("m", Need(13 * G), TWO, []) == Fit(("gpu0",))


def test_allowed_devices_are_respected() -> None:
    assert place("m", Need(4 * G, ("gpu0",)), TWO, []) == Fit(("gpu0",))


def test_already_resident_is_a_free_fit_on_its_devices() -> None:
    residents = [res("m", gpu0=10, gpu1=2)]
    assert place("m", Need(12 * G), TWO, residents) == Fit(("gpu0", "gpu1"))


def test_a_free_device_beats_evicting_on_another() -> None:
    residents = [res("a", gpu1=10)]
    assert place("m", Need(8 * G), TWO, residents) == Fit(("gpu0",))


def test_cheapest_set_of_idle_models_is_evicted() -> None:
    one = {"gpu0": 24 * G}
    residents = [res("a", cost=5, gpu0=10), res("b", cost=1, gpu0=10), res("c", cost=1, gpu0=4)]
    # 12 GiB must be freed: {b, c} costs 2; {a, c} 6; {a, b} 6.
    assert place("m", Need(12 * G), one, residents) == Fit(("gpu0",), ("b", "c"), 2.0)
    # one cheap big model beats two small ones
    residents = [res("a", cost=1.5, gpu0=20), res("b", cost=1, gpu0=2), res("c", cost=1, gpu0=2)]
    assert place("m", Need(4 * G), one, residents).evict == ("a",)  # type: ignore[union-attr]
    assert place("m", Need(2 * G), one, residents).evict == ("b",)  # type: ignore[union-attr]


def test_a_leased_model_is_never_evicted() -> None:
    one = {"gpu0": 24 * G}
    residents = [
        res("a", cost=5, gpu0=10),
        res("b", leased=True, cost=1, gpu0=10),
        res("c", cost=1, gpu0=4),
    ]
    assert place("m", Need(12 * G), one, residents) == Fit(("gpu0",), ("a", "c"), 6.0)


def test_only_leased_models_in_the_way_means_wait() -> None:
    one = {"gpu0": 24 * G}
    residents = [res("a", leased=True, gpu0=10), res("b", leased=True, gpu0=10), res("c", gpu0=4)]
    decision = place("m", Need(12 * G), one, residents)
    assert isinstance(decision, Wait)
    # as few leased models as possible: one of them plus the idle one
    assert decision.blockers == ("a",)
    assert decision.then.evict == ("a", "c")


def test_wait_prefers_the_device_where_fewer_leases_block() -> None:
    residents = [res("a", leased=True, gpu0=20), res("b", leased=True, gpu1=11)]
    decision = place("m", Need(10 * G), TWO, residents)
    assert isinstance(decision, Wait)
    assert decision.then.devices in (("gpu0",), ("gpu1",))
    assert len(decision.blockers) == 1


def test_split_need_and_split_residents() -> None:
    residents = [res("s", gpu0=10, gpu1=8), res("x", gpu0=6)]
    need = Need({"gpu0": 14 * G, "gpu1": 8 * G})
    # gpu1 needs the split model gone; that also frees 10 GiB on gpu0, enough.
    assert place("m", need, TWO, residents) == Fit(("gpu0", "gpu1"), ("s",), 1.0)


@pytest.mark.parametrize(
    ("need", "why"),
    [
        (Need(30 * G), "largest it may use"),
        (Need(13 * G, ("gpu1",)), "largest it may use"),
        (Need(1, ("gpu7",)), "none of its devices"),
        (Need({"gpu0": G, "gpu1": 13 * G}), "more than gpu1"),
        (Need({"gpu9": G}), "unknown device"),
    ],
)
def test_never_fits(need: Need, why: str) -> None:
    decision = place("m", need, TWO, [res("a", leased=True, gpu0=1)])
    assert isinstance(decision, NeverFits)
    assert why in decision.reason


def test_no_devices_at_all_never_fits() -> None:
    assert isinstance(place("m", Need(1), {}, []), NeverFits)


def test_eviction_cost_weighs_load_time_by_recency() -> None:
    assert eviction_cost(10, 0) == 11
    assert eviction_cost(10, 600) == pytest.approx(6)
    assert eviction_cost(10, 600, evict_cost=50) == pytest.approx(55)
    assert eviction_cost(10, 10**6) == pytest.approx(1)
    assert eviction_cost(10, 0, half_life=0) == 1


def test_many_residents_use_the_greedy_search_and_stay_minimal() -> None:
    n = EXACT_LIMIT + 6
    one = {"gpu0": n * G}
    residents = [res(f"r{i:02}", cost=1 + i % 3, gpu0=1) for i in range(n)]
    decision = place("m", Need(5 * G), one, residents)
    assert isinstance(decision, Fit)
    assert len(decision.evict) == 5
    assert decision.cost == 5.0  # the five cheapest (cost 1 each)


# ---- property: the decision is sound, minimal and (small cases) optimal ---------------------


def _fits(
    demand: Mapping[str, int],
    capacity: Mapping[str, int],
    residents: Sequence[Resident],
    evict: set[str],
) -> bool:
    kept = [r for r in residents if r.model not in evict]
    return all(sum(r.usage.get(d, 0) for r in kept) + b <= capacity[d] for d, b in demand.items())


def _demands(need: Need, capacity: Mapping[str, int]) -> list[dict[str, int]]:
    if isinstance(need.memory, int):
        return [{d: need.memory} for d in (need.devices or tuple(capacity)) if d in capacity]
    return [dict(need.memory)]


def _best_cost(
    need: Need, capacity: Mapping[str, int], residents: Sequence[Resident]
) -> float | None:
    """Brute force: the cheapest idle eviction set over every candidate, or None."""
    idle = [r for r in residents if not r.leased]
    best: float | None = None
    for demand in _demands(need, capacity):
        for k in range(len(idle) + 1):
            for subset in itertools.combinations(idle, k):
                if _fits(demand, capacity, residents, {r.model for r in subset}):
                    cost = sum(r.cost for r in subset)
                    best = cost if best is None else min(best, cost)
    return best


DEVICES = ("d0", "d1", "d2")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Need, dict[str, int], list[Resident]]:
    n_dev = draw(st.integers(1, 3))
    capacity = {d: draw(st.integers(1, 24)) for d in DEVICES[:n_dev]}
    residents = []
    for i in range(draw(st.integers(0, 7))):
        devs = draw(st.lists(st.sampled_from(DEVICES[:n_dev]), min_size=1, max_size=2, unique=True))
        usage = {d: draw(st.integers(1, 12)) for d in devs}
        residents.append(
            Resident(f"r{i}", usage, draw(st.booleans()), draw(st.integers(1, 20)) / 2)
        )
    if draw(st.booleans()):
        devs = draw(st.lists(st.sampled_from(DEVICES[:n_dev]), min_size=1, unique=True))
        need = Need({d: draw(st.integers(1, 26)) for d in devs})
    else:
        allowed = draw(st.lists(st.sampled_from(DEVICES[:n_dev]), unique=True))
        need = Need(draw(st.integers(1, 26)), tuple(allowed))
    return need, capacity, residents


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_placement_property(case: tuple[Need, dict[str, int], list[Resident]]) -> None:
    need, capacity, residents = case
    decision = place("target", need, capacity, residents)
    by_name = {r.model: r for r in residents}
    possible = [d for d in _demands(need, capacity) if all(b <= capacity[x] for x, b in d.items())]
    if isinstance(decision, NeverFits):
        assert not possible
        return
    fit = decision.then if isinstance(decision, Wait) else decision
    demand = next(d for d in possible if tuple(sorted(d)) == fit.devices)
    evict = set(fit.evict)
    assert evict <= set(by_name)
    assert _fits(demand, capacity, residents, evict)  # the result fits
    for m in evict:  # minimal: every evicted model was needed
        assert not _fits(demand, capacity, residents, evict - {m})
    best = _best_cost(need, capacity, residents)
    if isinstance(decision, Fit):
        assert not any(by_name[m].leased for m in evict)  # never evicts a leased model
        assert best is not None and decision.cost == pytest.approx(best)  # optimal
    else:
        assert best is None  # idle models alone could not make room
        assert decision.blockers
        assert set(decision.blockers) == {m for m in evict if by_name[m].leased}
