"""The scheduler placing models by memory: co-residence, the cheapest eviction, leases,
never-fits, measured usage, and how it composes with the group policy."""

from __future__ import annotations

from collections.abc import Mapping

from swap_harness import (
    Group,
    Harness,
    grants,
    group_policy,
    only_swap,
    rejects,
    stops,
    swaps,
)

from llamaswap.swap.placement import Need
from llamaswap.swap.residency import Residency
from llamaswap.swap.rules import Policy, SchedulerSettings
from llamaswap.swap.scheduler import Phase

G = 1024**3
ONE = {"gpu0": 24 * G}


def placed(
    needs: Mapping[str, Need],
    capacity: Mapping[str, int] | None = None,
    others: tuple[str, ...] = (),
) -> Harness:
    """Every model in the default group (as the config makes it); `needs` placed by memory."""
    models = (*needs, *others)
    residency = Residency(needs, ONE if capacity is None else capacity)
    return Harness(group_policy(default=Group(models)), models, residency=residency)


def start(h: Harness, model: str, request_id: int, load_time: float = 1.0) -> None:
    """Request `model`, let its swap finish, serve the request."""
    swap = only_swap(h.request(request_id, model))
    assert request_id in grants(h.swap_done(swap.swap_id, load_time=load_time))
    h.served(request_id)


def test_two_models_that_fit_together_co_reside() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)})
    start(h, "a", 1)
    swap = only_swap(h.request(2, "b"))
    assert swap.evict == frozenset()
    assert h.scheduler.devices_of("b") == ("gpu0",)
    h.swap_done(swap.swap_id)
    assert h.phase("a") is Phase.READY and h.phase("b") is Phase.READY
    assert grants(h.request(3, "a")) == [3]  # still loaded: served at once


def test_a_third_model_evicts_the_least_costly_idle_one() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G), "c": Need(10 * G)})
    start(h, "a", 1, load_time=30.0)  # slow to load again: dear to evict
    start(h, "b", 2, load_time=1.0)
    swap = only_swap(h.request(3, "c"))
    assert swap.evict == frozenset({"b"})


def test_recently_used_counts_more_than_long_idle() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G), "c": Need(10 * G)})
    start(h, "a", 1, load_time=10.0)
    start(h, "b", 2, load_time=10.0)
    h.now = 3600.0  # both idle for an hour ...
    assert grants(h.request(3, "b")) == [3]
    h.served(3)  # ... but b was used just now
    assert only_swap(h.request(4, "c")).evict == frozenset({"a"})


def test_a_leased_model_is_never_evicted_the_target_waits() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G), "c": Need(10 * G)})
    start(h, "a", 1)
    start(h, "b", 2)
    assert grants(h.request(3, "a")) == [3]
    assert grants(h.request(4, "b")) == [4]
    assert swaps(h.request(5, "c")) == []  # both hold leases: wait
    effects = h.served(3)  # a is idle now: it makes room
    assert only_swap(effects).evict == frozenset({"a"})
    assert h.phase("b") is Phase.READY


def test_a_model_that_can_never_fit_is_refused_with_need_and_capacity() -> None:
    h = placed({"a": Need(30 * G)})
    reject = rejects(h.request(1, "a"))[1]
    assert reject.status == 503
    assert "model a can never fit" in reject.message
    assert "30GiB" in reject.message and "gpu0 has 24GiB" in reject.message


def test_allowed_devices_and_the_chosen_device_are_kept() -> None:
    capacity = {"gpu0": 24 * G, "gpu1": 12 * G}
    h = placed({"a": Need(8 * G, ("gpu0",)), "b": Need(8 * G)}, capacity)
    start(h, "a", 1)
    assert h.scheduler.devices_of("a") == ("gpu0",)
    start(h, "b", 2)
    assert h.scheduler.devices_of("b") == ("gpu1",)  # the tightest fit
    assert h.scheduler.usage_of("b") == {"gpu1": 8 * G}


def test_a_split_model_frees_memory_on_each_of_its_devices() -> None:
    capacity = {"gpu0": 24 * G, "gpu1": 12 * G}
    split = Need({"gpu0": 16 * G, "gpu1": 8 * G})
    h = placed({"s": split, "a": Need(10 * G), "b": Need(6 * G, ("gpu1",))}, capacity)
    start(h, "s", 1)
    start(h, "a", 2)  # 10 GiB fits on neither device now: evicts s
    assert h.phase("s") is Phase.STOPPED
    assert h.scheduler.devices_of("a") == ("gpu1",)


def test_measured_usage_above_the_declared_need_is_counted() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)})
    start(h, "a", 1)
    assert h.scheduler.on_measured("a", {"gpu0": 18 * G}) == {"gpu0": 18 * G}
    assert only_swap(h.request(2, "b")).evict == frozenset({"a"})


def test_measured_usage_below_the_declared_need_keeps_the_declared() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)})
    start(h, "a", 1)
    assert h.scheduler.on_measured("a", {"gpu0": 2 * G}) == {"gpu0": 10 * G}


def test_a_model_not_placed_by_memory_is_exclusive_both_ways() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)}, others=("x",))
    start(h, "a", 1)
    start(h, "b", 2)
    # x declares no memory: as a member of the default group it stops the others ...
    assert only_swap(h.request(3, "x")).evict == frozenset({"a", "b"})
    h.swap_done(h.all_swaps()[-1].swap_id)
    h.served(3)
    # ... and a placed model stops x (whose memory is unknown) but nothing placed it fits by.
    assert only_swap(h.request(4, "a")).evict == frozenset({"x"})
    assert h.scheduler.devices_of("x") is None


def test_without_devices_the_group_policy_decides() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)}, capacity={})
    start(h, "a", 1)
    assert only_swap(h.request(2, "b")).evict == frozenset({"a"})
    assert h.scheduler.devices_of("b") is None


def test_devices_detected_later_turn_placement_on() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)}, capacity={})
    h.scheduler.on_devices(ONE, h.now)
    start(h, "a", 1)
    assert only_swap(h.request(2, "b")).evict == frozenset()


def test_a_reload_keeps_the_placement_of_an_adopted_model() -> None:
    h = placed({"a": Need(10 * G), "b": Need(10 * G)})
    h.scheduler.adopt_ready("a", [], 0.0, (("gpu0",), {"gpu0": 20 * G}))
    assert h.scheduler.devices_of("a") == ("gpu0",)
    assert only_swap(h.request(1, "b")).evict == frozenset({"a"})  # 20 + 10 > 24


# ---- the sleep tier ----------------------------------------------------------------------


def sleepy(host_memory: int | None = None, sleepers: tuple[str, ...] = ("a",)) -> Harness:
    """a, b, c, d need 10 GiB each on one 24 GiB device; `sleepers` can sleep (holding 10 GiB
    of host memory then)."""
    needs = {m: Need(10 * G) for m in ("a", "b", "c", "d")}
    residency = Residency(needs, ONE, dict.fromkeys(sleepers, 10 * G), host_memory)
    return Harness(group_policy(default=Group(tuple(needs))), tuple(needs), residency=residency)


def test_an_evicted_model_that_can_sleep_is_put_to_sleep_and_woken_where_it_slept() -> None:
    h = sleepy()
    start(h, "a", 1, load_time=30.0)  # slow to load, but it wakes fast: cheapest to evict
    start(h, "b", 2, load_time=30.0)
    swap = only_swap(h.request(3, "c"))
    assert (swap.evict, swap.sleep, swap.wake) == (frozenset({"a"}), frozenset({"a"}), False)
    h.swap_done(swap.swap_id)
    h.served(3)
    assert h.phase("a") is Phase.ASLEEP
    wake = only_swap(h.request(4, "a"))
    assert wake.wake and len(wake.evict) == 1 and wake.sleep == frozenset()
    assert 4 in grants(h.swap_done(wake.swap_id, load_time=0.2))
    assert h.scheduler.devices_of("a") == ("gpu0",)
    assert h.scheduler.load_time("a").seconds == 30.0  # type: ignore[union-attr]


def test_sleeping_models_are_stopped_when_host_memory_runs_short() -> None:
    h = sleepy(host_memory=15 * G, sleepers=("a", "b"))  # host memory holds one sleeper
    start(h, "a", 1)
    start(h, "b", 2)
    first = only_swap(
        h.request(
            3,
            "c",
        ),
    )
    h.swap_done(first.swap_id, load_time=60.0)  # c: dear to evict
    h.served(3)
    (asleep,) = first.sleep
    awake = ({"a", "b"} - {asleep}).pop()
    swap = only_swap(h.request(4, "d"))
    # The awake sleeper goes to sleep; the sleeping one is stopped to make room for it.
    assert swap.evict == frozenset({awake, asleep}) and swap.sleep == frozenset({awake})
    h.swap_done(swap.swap_id)
    assert h.phase(awake) is Phase.ASLEEP and h.phase(asleep) is Phase.STOPPED
    assert h.phase("c") is Phase.READY


def test_a_model_whose_sleep_would_never_fit_in_host_memory_is_stopped() -> None:
    h = sleepy(host_memory=5 * G)
    start(h, "a", 1, load_time=30.0)
    start(h, "b", 2, load_time=1.0)
    swap = only_swap(h.request(3, "c"))
    assert swap.sleep == frozenset()
    h.swap_done(swap.swap_id)
    assert h.phase(next(iter(swap.evict))) is Phase.STOPPED


def test_a_model_that_failed_to_fall_asleep_is_stopped() -> None:
    h = sleepy()
    start(h, "a", 1, load_time=30.0)
    start(h, "b", 2, load_time=30.0)
    swap = only_swap(h.request(3, "c"))
    h.scheduler.on_swap_done(swap.swap_id, None, h.now, None, slept=())
    assert h.phase("a") is Phase.STOPPED


def a_asleep() -> Harness:
    """a and b loaded (slow to load), then c put a to sleep."""
    h = sleepy()
    start(h, "a", 1, load_time=30.0)
    start(h, "b", 2, load_time=30.0)
    h.swap_done(only_swap(h.request(3, "c")).swap_id)
    h.served(3)
    assert h.phase("a") is Phase.ASLEEP
    return h


def test_a_sleeping_model_that_exits_is_stopped() -> None:
    h = a_asleep()
    h.exited("a")
    assert h.phase("a") is Phase.STOPPED
    assert only_swap(h.request(4, "a")).wake is False  # started afresh


def test_unload_stops_sleeping_models() -> None:
    h = a_asleep()
    assert "a" in stops(h.unload())[0].models


def test_a_failed_wake_leaves_the_model_stopped() -> None:
    h = a_asleep()
    wake = only_swap(h.request(4, "a"))
    assert rejects(h.swap_done(wake.swap_id, "wake failed"))[4].status == 500
    assert h.phase("a") is Phase.STOPPED


def test_batch_holds_a_model_that_can_sleep_only_for_requests_faster_than_its_wake() -> None:
    """Batch keeps a model for its arriving requests when they come faster than it comes
    back; for a model that sleeps that is its wake (1 s until seen), not its load."""
    needs = {"a": Need(14 * G), "b": Need(14 * G)}
    residency = Residency(needs, ONE, dict.fromkeys(needs, 14 * G), None)
    settings = SchedulerSettings(policy=Policy.BATCH, min_resident=0.0)
    h = Harness(group_policy(default=Group(("a", "b"))), ("a", "b"), settings, residency)
    start(h, "a", 1, load_time=3.0)
    for offset, at in enumerate((1.2, 2.4, 3.6)):  # every 1.2 s: under its load, over a wake
        h.now = at
        assert grants(h.request(10 + offset, "a")) == [10 + offset]
        h.served(10 + offset)
    h.now = 3.7
    swap = only_swap(h.request(2, "b"))
    assert (swap.evict, swap.sleep) == (frozenset({"a"}), frozenset({"a"}))
