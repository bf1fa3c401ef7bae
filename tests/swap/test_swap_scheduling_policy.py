"""The scheduler's own improvements on llama-swap, driven synchronously: queueing instead of
refusing, the batch policy and maxWait, crash-loop backoff, abandoned loads, exclusive refresh."""

from __future__ import annotations

import pytest

from swap_harness import Group, Harness, grants, group_policy, only_swap, rejects, stops, swaps

from llamaswap.swap.effects import CancelStart, StartSwap, StopModels
from llamaswap.swap.rules import Admission, Backoff, Policy, SchedulerSettings
from llamaswap.swap.scheduler import ModelRules, Phase

MODELS = ("a", "b", "c")


def exclusive(
    settings: SchedulerSettings | None = None, rules: dict[str, ModelRules] | None = None
) -> Harness:
    """Every model in one swap+exclusive group: one model runs at a time."""
    policy = group_policy(default=Group(MODELS))
    return Harness(policy, rules or {m: ModelRules() for m in MODELS}, settings)


def batch(**overrides: object) -> SchedulerSettings:
    return SchedulerSettings(policy=Policy.BATCH, **overrides)  # type: ignore[arg-type]


def load(h: Harness, model: str, request_id: int) -> None:
    """Bring `model` up through one request, which keeps its lease."""
    swap = only_swap(h.request(request_id, model))
    assert grants(h.swap_done(swap.swap_id)) == [request_id]
    assert h.phase(model) is Phase.READY


# ---- admission: queue by default, llama-swap's refusal when concurrencyLimit is written ----


def test_default_admission_queues_past_the_in_flight_limit_and_refuses_past_max_queue() -> None:
    rules = {m: ModelRules(concurrency_limit=1, max_queue=2) for m in MODELS}
    h = exclusive(rules=rules)
    load(h, "a", 1)
    assert h.request(2, "a") == [] or not grants(h.log[-1:])
    h.request(3, "a")
    assert h.scheduler.waiting_for("a") == 2
    refused = rejects(h.request(4, "a"))[4]
    assert (refused.status, refused.code) == (429, "queue_full")
    assert refused.retry_after is not None and refused.retry_after >= 1.0
    assert "2 requests already wait for model a" in refused.message
    # Capacity frees up in order: each served request lets the next one in.
    assert grants(h.served(1)) == [2]
    assert grants(h.served(2)) == [3]


def test_written_concurrency_limit_refuses_at_once_like_llama_swap() -> None:
    rules = {m: ModelRules(concurrency_limit=2, admission=Admission.LIMIT) for m in MODELS}
    h = exclusive(rules=rules)
    load(h, "a", 1)
    assert grants(h.request(2, "a")) == [2]
    refused = rejects(h.request(3, "a"))[3]
    assert (refused.status, refused.code) == (429, "concurrency_limit")
    assert h.scheduler.waiting_for("a") == 0


# ---- batch: serve the loaded model's queue before swapping away ----------------------------


def swaps_for(settings: SchedulerSettings) -> tuple[list[int], list[StartSwap]]:
    """a is loaded and busy; b is asked for, then a again: who is served before the swap?"""
    h = exclusive(settings)
    load(h, "a", 1)
    h.now = 10.0  # past minResident: a may be evicted once idle
    h.request(2, "b")
    before_swap = grants(h.request(3, "a"))
    h.served(1)
    return before_swap, h.all_swaps()


def test_batch_serves_the_loaded_model_before_swapping_fifo_does_not() -> None:
    assert swaps_for(SchedulerSettings(policy=Policy.FIFO))[0] == []
    granted, _ = swaps_for(batch())
    assert granted == [3]


def test_batch_swaps_once_the_loaded_model_has_drained() -> None:
    h = exclusive(batch(patience=0.0))  # no arrival pattern to go by: only what waits counts
    load(h, "a", 1)
    h.now = 10.0
    h.request(2, "b")
    assert grants(h.request(3, "a")) == [3]
    h.served(1)
    assert [s.target for s in h.all_swaps()] == ["a"]
    swap = only_swap(h.served(3))
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))
    assert grants(h.swap_done(swap.swap_id)) == [2]


def steady_stream(h: Harness, model: str, times: list[float], first_id: int) -> None:
    """Requests for a loaded `model` at `times`, each served before the next arrives."""
    for offset, at in enumerate(times):
        h.now = at
        assert grants(h.request(first_id + offset, model)) == [first_id + offset]
        h.served(first_id + offset)


def test_batch_keeps_a_model_whose_requests_keep_arriving() -> None:
    h = exclusive(batch(min_resident=0.0), {m: ModelRules(max_wait=30.0) for m in MODELS})
    load(h, "a", 1)
    h.served(1)
    steady_stream(h, "a", [0.5, 1.0, 1.5], 10)  # one every 0.5 s: more expected until 4.5
    h.now = 1.6
    assert swaps(h.request(2, "b")) == []
    h.now = 1.8
    assert grants(h.request(13, "a")) == [13]  # a's stream goes on: 0.5 s gaps on average
    h.served(13)
    # Its stream has stopped: three average gaps after its last request, b goes.
    until = h.scheduler.next_deadline()
    assert until is not None and 1.8 < until < 30.0
    swap = only_swap(h.tick(until))
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))


@pytest.mark.parametrize(("max_wait", "held_until"), [(8.0, 1.5 + 3.0), (40.0, 1.5 + 10.0)])
def test_a_larger_max_wait_holds_a_stream_longer(max_wait: float, held_until: float) -> None:
    """A stream is held six average gaps after its last request (0.5 s gaps: 3 s), and at
    least a quarter of the waiting request's maxWait: maxWait trades waits for swaps."""
    rules = {m: ModelRules(max_wait=max_wait) for m in MODELS}
    h = exclusive(batch(min_resident=0.0, stop_time=0.0), rules)
    load(h, "a", 1)
    h.served(1)
    steady_stream(h, "a", [0.5, 1.0, 1.5], 10)
    h.now = 1.6
    assert swaps(h.request(2, "b")) == []
    assert h.scheduler.next_deadline() == pytest.approx(held_until)
    assert swaps(h.tick(held_until - 0.01)) == []
    swap = only_swap(h.tick(held_until))
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))


def test_one_person_switching_models_is_not_held_up() -> None:
    """Requests for a further apart than its load time: switching to b swaps at once."""
    h = exclusive(batch(min_resident=0.0), {m: ModelRules(max_wait=30.0) for m in MODELS})
    load(h, "a", 1)
    h.served(1)
    steady_stream(h, "a", [20.0, 40.0, 60.0], 10)  # one every 20 s; a loads in 5 s (guess)
    h.now = 61.0
    swap = only_swap(h.request(2, "b"))
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))


def test_an_overdue_request_ends_the_stickiness() -> None:
    # No stop time and leases served at once: b is due exactly maxWait after it arrived.
    h = exclusive(
        batch(min_resident=0.0, stop_time=0.0), {m: ModelRules(max_wait=1.0) for m in MODELS}
    )
    load(h, "a", 1)
    h.served(1)
    steady_stream(h, "a", [0.2, 0.4, 0.6, 0.8, 1.0], 10)
    h.now = 1.05
    assert swaps(h.request(2, "b")) == []
    steady_stream(h, "a", [1.2, 1.4, 1.6, 1.8, 2.0], 20)  # a's stream goes on
    swap = only_swap(h.tick(2.05))  # b has waited maxWait: it goes now
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))
    assert grants(h.request(99, "a")) == []


def test_max_wait_bounds_the_wait_under_sustained_traffic_to_the_loaded_model() -> None:
    rules = {m: ModelRules(max_wait=5.0) for m in MODELS}
    # Learned times are the last sample (weight 1), stops take no time: exact deadlines.
    h = exclusive(batch(stop_time=0.0, load_time_weight=1.0), rules)
    load(h, "a", 1)
    h.served(1)
    steady_stream(h, "a", [8.0, 8.5, 9.0, 9.5, 10.0], 20)  # more of a is expected
    h.request(2, "b")  # arrives at 10: its deadline is 15
    previous = None
    for request_id in range(3, 7):  # 11..14: each a request served when the next arrives
        h.now += 1.0
        if previous is not None:
            h.served(previous)
        assert grants(h.request(request_id, "a")) == ([request_id] if h.now < 14.0 else [])
        previous = request_id
    # From 14 on a takes no new lease: one more (1 s, as learned from the last) would end
    # after b's deadline, when b's load must start. The swap waits only for a to drain.
    assert h.now == 14.0 and grants(h.request(99, "a")) == []
    assert h.scheduler.leases_on("a") == [] and h.scheduler.next_deadline() == 15.0
    h.now = 15.0
    swap = only_swap(h.tick(15.0))  # b's load starts at its deadline
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))
    assert grants(h.swap_done(swap.swap_id)) == [2]


def test_a_freshly_loaded_model_serves_min_resident_even_when_another_is_overdue() -> None:
    rules = {m: ModelRules(max_wait=2.0) for m in MODELS}
    h = exclusive(batch(min_resident=5.0), rules)
    load(h, "a", 1)
    h.request(2, "b")
    h.tick(3.0)  # b is overdue, but a became ready only 3 s ago and is busy
    assert grants(h.request(3, "a")) == [3]
    assert swaps(h.served(1)) == []
    h.tick(5.0)
    # minResident is over: b's swap is planned, a takes no new lease and drains.
    assert grants(h.request(4, "a")) == []
    assert not stops(h.log)  # a leased model is never stopped
    swap = only_swap(h.served(3))
    assert (swap.target, swap.evict) == ("b", frozenset({"a"}))
    assert grants(h.swap_done(swap.swap_id)) == [2]


# ---- crash-loop backoff --------------------------------------------------------------------


def test_repeated_failed_starts_back_off_with_a_fast_clear_503() -> None:
    h = exclusive(SchedulerSettings(backoff=Backoff(after=2, initial=5.0, maximum=60.0)))
    for request_id in (1, 2):
        swap = only_swap(h.request(request_id, "a"))
        assert rejects(h.swap_done(swap.swap_id, "exit code 1: no such file"))
    refused = rejects(h.request(3, "a"))[3]
    assert refused.status == 503
    assert "model a failed to start 2 times in a row" in refused.message
    assert "exit code 1: no such file" in refused.message
    backoff = h.scheduler.backoff("a", h.now)
    assert backoff is not None and backoff.until == 5.0
    # Other models are not affected.
    other = only_swap(h.request(4, "b"))
    assert grants(h.swap_done(other.swap_id)) == [4]
    h.served(4)
    # After the backoff, one more try; a further failure doubles the wait.
    h.tick(5.0)
    swap = only_swap(h.request(5, "a"))
    h.swap_done(swap.swap_id, "exit code 1")
    backoff = h.scheduler.backoff("a", h.now)
    assert backoff is not None and backoff.failures == 3 and backoff.until == 15.0


def test_a_successful_start_resets_the_backoff() -> None:
    h = exclusive(SchedulerSettings(backoff=Backoff(after=2, initial=1.0)))
    for request_id in (1, 2):
        swap = only_swap(h.request(request_id, "a"))
        h.swap_done(swap.swap_id, "boom")
    h.tick(1.0)
    h.now = 1.0
    load(h, "a", 3)
    assert h.scheduler.backoff("a", h.now) is None
    assert h.scheduler.start_failures("a") == 0


# ---- abandoned loads -----------------------------------------------------------------------


def test_abandoned_load_is_cancelled_only_when_configured() -> None:
    for cancel in (False, True):
        h = exclusive(SchedulerSettings(cancel_abandoned_loads=cancel))
        swap = only_swap(h.request(1, "a"))
        effects = h.cancel(1)
        cancelled = [e for e in effects if isinstance(e, CancelStart)]
        assert cancelled == ([CancelStart(swap.swap_id, "a")] if cancel else [])


def test_a_load_someone_still_waits_for_is_not_cancelled() -> None:
    h = exclusive(SchedulerSettings(cancel_abandoned_loads=True))
    swap = only_swap(h.request(1, "a"))
    h.request(2, "a")
    assert not [e for e in h.cancel(1) if isinstance(e, CancelStart)]
    assert grants(h.swap_done(swap.swap_id)) == [2]


# ---- exclusive groups refresh a ready model (spec §4.4 step 4) -----------------------------


def test_request_for_a_ready_exclusive_model_evicts_other_groups_first() -> None:
    policy = group_policy(
        big=Group(("a",), exclusive=True),
        side=Group(("b",), exclusive=False),
    )
    h = Harness(policy, ("a", "b"))
    load(h, "a", 1)
    h.served(1)
    load(h, "b", 2)  # b's group is not exclusive: a keeps running
    h.served(2)
    assert h.phase("a") is Phase.READY and h.phase("b") is Phase.READY
    effects = h.request(3, "a")
    assert grants(effects) == []
    swap = only_swap(effects)
    assert (swap.target, swap.evict) == ("a", frozenset({"b"}))
    assert h.phase("a") is Phase.READY  # a refresh: a itself is not restarted
    assert grants(h.swap_done(swap.swap_id)) == [3]
    assert not [e for e in h.log if isinstance(e, StopModels) and "a" in e.models]
