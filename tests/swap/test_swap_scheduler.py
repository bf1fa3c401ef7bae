"""The pure scheduler driven synchronously: leases, collation, ordering, limits, lifecycle."""

from __future__ import annotations

from swap_harness import (
    Group,
    Harness,
    grants,
    group_policy,
    only_swap,
    positions,
    rejects,
    stops,
    swaps,
)

from llamaswap.swap.effects import Grant, Reject, StartSwap, StopModels, StopReason
from llamaswap.swap.rules import Admission
from llamaswap.swap.scheduler import ModelRules, Phase

MODELS = ("a", "b", "c", "d")


def one_at_a_time(rules: dict[str, ModelRules] | None = None) -> Harness:
    """The llama-swap default: every model in one swap+exclusive group."""
    policy = group_policy(default=Group(MODELS))
    return Harness(policy, rules or {m: ModelRules() for m in MODELS})


def parallel_groups() -> Harness:
    """Three non-exclusive groups: {a,b} may run together; c and d each swap alone."""
    policy = group_policy(
        ab=Group(("a", "b"), swap=False, exclusive=False),
        c=Group(("c",), exclusive=False),
        d=Group(("d",), exclusive=False),
    )
    return Harness(policy, MODELS)


def ready(h: Harness, model: str, request_id: int) -> None:
    """Make `model` ready via one request and serve it, leaving no lease behind."""
    swap = only_swap(h.request(request_id, model))
    assert grants(h.swap_done(swap.swap_id)) == [request_id]
    h.served(request_id)
    assert h.phase(model) is Phase.READY


# ---- fast path and leases ------------------------------------------------------------------


def test_fast_path_grants_in_the_registering_call() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    effects = h.request(2, "a")
    assert effects == [Grant(2, "a")]
    assert h.scheduler.lease_count("a") == 1
    assert h.scheduler.queue_depth() == 0


def test_unknown_model_is_rejected_404() -> None:
    h = one_at_a_time()
    [reject] = h.request(1, "nope")
    assert isinstance(reject, Reject)
    assert reject.status == 404


def test_leased_model_is_not_stopped_until_served() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    assert grants(h.request(2, "a")) == [2]
    waiting = h.request(3, "b")
    assert swaps(waiting) == []  # a holds a lease: the swap drains first
    assert positions(waiting) == {}  # waiting on a swap, not behind other requests
    assert h.phase("a") is Phase.READY
    launched = only_swap(h.served(2))
    assert launched == StartSwap(launched.swap_id, "b", frozenset({"a"}))
    assert h.phase("a") is Phase.STOPPING
    assert h.phase("b") is Phase.STARTING
    assert grants(h.swap_done(launched.swap_id)) == [3]


def test_other_models_are_granted_while_a_swap_drains() -> None:
    h = parallel_groups()
    ready(h, "a", 1)
    ready(h, "c", 2)
    assert grants(h.request(3, "a")) == [3]  # a leased
    # b joins {a,b} (swap:false): nothing to evict, starts at once.
    swap_b = only_swap(h.request(4, "b"))
    assert swap_b.evict == frozenset()
    # c is not evicted by anything: fast path while a's lease is held.
    assert grants(h.request(5, "c")) == [5]
    assert grants(h.swap_done(swap_b.swap_id)) == [4]


def test_requests_for_the_evicted_model_queue_behind_the_swap() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    assert grants(h.request(2, "a")) == [2]
    assert swaps(h.request(3, "b")) == []
    # A stream of new requests for a must not keep a alive forever.
    for request_id in (4, 5, 6):
        assert grants(h.request(request_id, "a")) == []
    launched = only_swap(h.served(2))
    assert launched.target == "b"
    assert grants(h.swap_done(launched.swap_id)) == [3]
    back = only_swap(h.served(3))
    assert back == StartSwap(back.swap_id, "a", frozenset({"b"}))
    assert grants(h.swap_done(back.swap_id)) == [4, 5, 6]


# ---- collation and start failures ----------------------------------------------------------


def test_collation_one_start_for_many_requests() -> None:
    h = one_at_a_time()
    first = only_swap(h.request(1, "a"))
    for request_id in range(2, 6):
        assert swaps(h.request(request_id, "a")) == []
    assert h.scheduler.queue_depth() == 5
    assert grants(h.swap_done(first.swap_id)) == [1, 2, 3, 4, 5]
    assert h.scheduler.lease_count("a") == 5
    assert len(h.all_swaps()) == 1


def test_start_failure_rejects_every_waiter_500() -> None:
    h = one_at_a_time()
    swap = only_swap(h.request(1, "a"))
    h.request(2, "a")
    h.request(3, "a")
    failed = rejects(h.swap_done(swap.swap_id, "exit status 1"))
    assert set(failed) == {1, 2, 3}
    for reject in failed.values():
        assert reject.status == 500
        assert "exit status 1" in reject.message
    assert h.phase("a") is Phase.STOPPED
    # The next request retries the start from scratch.
    assert only_swap(h.request(4, "a")).target == "a"


def test_unknown_swap_done_is_ignored() -> None:
    h = one_at_a_time()
    assert h.swap_done(99) == []


# ---- parallel, colliding and collated swaps ------------------------------------------------


def test_disjoint_swaps_run_in_parallel() -> None:
    h = parallel_groups()
    swap_a = only_swap(h.request(1, "a"))
    swap_c = only_swap(h.request(2, "c"))
    swap_d = only_swap(h.request(3, "d"))
    assert {s.target for s in h.scheduler.active_swaps()} == {"a", "c", "d"}
    assert swap_a.evict == swap_c.evict == swap_d.evict == frozenset()
    assert grants(h.swap_done(swap_c.swap_id)) == [2]
    assert grants(h.swap_done(swap_a.swap_id)) == [1]
    assert grants(h.swap_done(swap_d.swap_id)) == [3]


def test_colliding_swaps_queue() -> None:
    h = one_at_a_time()
    swap_a = only_swap(h.request(1, "a"))
    # b would evict a, the target of a swap in progress: queue, no second start.
    assert swaps(h.request(2, "b")) == []
    assert h.phase("b") is Phase.STOPPED
    effects = h.swap_done(swap_a.swap_id)
    assert grants(effects) == [1]
    assert swaps(effects) == []  # a is leased now
    swap_b = only_swap(h.served(1))
    assert swap_b.evict == frozenset({"a"})


def test_overlapping_evict_sets_serialise() -> None:
    policy = group_policy(
        x=Group(("a", "b"), exclusive=False),
        y=Group(("c", "d"), exclusive=False),
    )
    h = Harness(policy, MODELS)
    ready(h, "a", 1)
    h.request(2, "a")  # leased: b's swap must wait for it
    assert swaps(h.request(3, "b")) == []
    # c is unrelated (other group, non-exclusive): starts in parallel.
    assert only_swap(h.request(4, "c")).evict == frozenset()
    swap_b = only_swap(h.served(2))
    assert swap_b.evict == frozenset({"a"})


def test_abcabc_collates_into_three_swaps() -> None:
    h = one_at_a_time()
    for request_id, model in enumerate("abcabc", start=1):
        h.request(request_id, model)
    served_in_order: list[str] = []
    while True:
        active = h.scheduler.active_swaps()
        if not active:
            break
        [swap] = active
        granted = grants(h.swap_done(swap.swap_id))
        assert len(granted) == 2
        served_in_order += [swap.target] * 2
        for request_id in granted:
            h.served(request_id)
    assert served_in_order == list("aabbcc")
    assert len(h.all_swaps()) == 3
    assert h.scheduler.queue_depth() == 0


# ---- priority and concurrency limit --------------------------------------------------------


def test_priority_order_with_fifo_ties() -> None:
    rules = {
        "a": ModelRules(priority=10),
        "b": ModelRules(priority=5),
        "c": ModelRules(priority=5),
        "d": ModelRules(priority=1),
        "z": ModelRules(),
    }
    h = Harness(group_policy(default=Group(tuple(rules))), rules)
    ready(h, "z", 1)
    h.request(2, "z")  # leased: everything below queues
    for request_id, model in ((3, "d"), (4, "c"), (5, "b"), (6, "a")):
        assert grants(h.request(request_id, model)) == []
    order: list[str] = []
    current = 2
    while True:
        effects = h.served(current)
        started = swaps(effects)
        if not started:
            break
        [swap] = started
        order.append(swap.target)
        [current] = grants(h.swap_done(swap.swap_id))
    assert order == ["a", "c", "b", "d"]


LIMIT = Admission.LIMIT


def test_concurrency_limit_default_is_ten() -> None:
    h = one_at_a_time({m: ModelRules(admission=LIMIT) for m in MODELS})
    swap = only_swap(h.request(1, "a"))
    for request_id in range(2, 11):
        assert rejects(h.request(request_id, "a")) == {}
    [reject] = h.request(11, "a")
    assert reject == Reject(11, 429, "Too many requests", "concurrency_limit", 1.0)
    h.swap_done(swap.swap_id)
    # Granted requests keep their reservation until served.
    assert rejects(h.request(12, "a"))[12].status == 429
    h.served(1)
    assert grants(h.request(13, "a")) == [13]


def test_concurrency_limit_custom_and_per_model() -> None:
    rules = {
        m: ModelRules(concurrency_limit=2 if m == "a" else 10, admission=LIMIT) for m in MODELS
    }
    h = one_at_a_time(rules)
    ready(h, "a", 1)
    assert grants(h.request(2, "a")) == [2]
    assert grants(h.request(3, "a")) == [3]
    assert rejects(h.request(4, "a"))[4].code == "concurrency_limit"
    assert rejects(h.request(5, "b")) == {}  # b has its own budget


def test_queued_and_swap_waiting_requests_reserve_and_cancel_releases() -> None:
    rules = {m: ModelRules(concurrency_limit=2, admission=LIMIT) for m in MODELS}
    h = one_at_a_time(rules)
    ready(h, "a", 1)
    h.request(2, "a")  # lease on a
    h.request(3, "b")  # a swap for b, draining
    h.request(4, "b")  # joins it
    assert rejects(h.request(5, "b"))[5].status == 429
    h.cancel(4)
    assert rejects(h.request(6, "b")) == {}
    # A queued (not swap-joined) request also reserves.
    h.request(7, "c")
    h.request(8, "c")
    assert rejects(h.request(9, "c"))[9].status == 429
    h.cancel(7)
    assert rejects(h.request(10, "c")) == {}


# ---- cancellation --------------------------------------------------------------------------


def test_cancel_while_queued() -> None:
    h = one_at_a_time()
    swap_a = only_swap(h.request(1, "a"))
    h.request(2, "b")  # queued: collides with a's swap
    assert h.cancel(2) == []
    assert h.scheduler.queue_depth() == 1
    effects = h.swap_done(swap_a.swap_id)
    assert grants(effects) == [1]
    assert swaps(h.served(1)) == []  # nobody wants b any more
    assert h.outcomes(2) == []


def test_cancel_while_waiting_on_a_launched_swap_still_completes_it() -> None:
    h = one_at_a_time()
    swap = only_swap(h.request(1, "a"))
    h.cancel(1)
    assert h.scheduler.queue_depth() == 0
    assert h.swap_done(swap.swap_id) == []
    assert h.phase("a") is Phase.READY
    assert grants(h.request(2, "a")) == [2]


def test_cancel_of_the_only_waiter_drops_a_draining_swap() -> None:
    # Regression: a swap still waiting for leases to drain, whose only waiter left, used to
    # launch anyway once the lease ended: it stopped `a` to start `b` for nobody, and held
    # new requests for `a` behind it in the meantime.
    h = one_at_a_time()
    ready(h, "a", 1)
    h.request(2, "a")  # long stream on a
    assert swaps(h.request(3, "b")) == []
    h.cancel(3)
    assert h.scheduler.active_swaps() == []
    assert grants(h.request(4, "a")) == [4]  # a is not held for a phantom swap
    assert swaps(h.served(2)) == []
    assert swaps(h.served(4)) == []
    assert h.phase("a") is Phase.READY


def test_cancel_after_grant_counts_as_served() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    h.request(2, "a")
    h.request(3, "b")
    launched = only_swap(h.cancel(2))
    assert launched.target == "b"
    assert h.scheduler.lease_count("a") == 0


def test_cancel_unknown_is_a_noop() -> None:
    h = one_at_a_time()
    assert h.cancel(42) == []
    ready(h, "a", 1)
    assert h.cancel(1) == []  # already served
    assert h.served(1) == []


# ---- unload --------------------------------------------------------------------------------


def test_unload_rejects_waiters_and_stops_ready_models() -> None:
    h = parallel_groups()
    ready(h, "a", 1)
    swap_c = only_swap(h.request(2, "c"))
    h.request(3, "c")
    effects = h.unload(["a", "b"])
    assert stops(effects) == [StopModels(frozenset({"a"}), StopReason.UNLOAD)]
    assert h.phase("a") is Phase.STOPPING
    effects = h.unload(None)
    assert set(rejects(effects)) == {2, 3}
    assert all(r.status == 500 and "unloaded" in r.message for r in rejects(effects).values())
    # c's swap was launched: it completes, then c is stopped.
    assert stops(h.swap_done(swap_c.swap_id)) == [StopModels(frozenset({"c"}), StopReason.UNLOAD)]
    assert h.phase("c") is Phase.STOPPING


def test_unload_of_a_draining_swap_target_drops_the_swap() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    h.request(2, "a")
    h.request(3, "b")
    assert set(rejects(h.unload(["b"]))) == {3}
    assert h.scheduler.active_swaps() == []
    assert swaps(h.served(2)) == []


def test_request_after_unload_of_a_starting_model_is_not_granted_to_a_dying_process() -> None:
    # Regression: a request arriving while an unloaded model was still starting joined the
    # doomed swap, was granted on completion and the model was stopped right under its lease.
    h = one_at_a_time()
    swap = only_swap(h.request(1, "a"))
    h.unload(["a"])
    h.request(2, "a")
    effects = h.swap_done(swap.swap_id)
    assert grants(effects) == []
    assert stops(effects) == [StopModels(frozenset({"a"}), StopReason.UNLOAD)]
    restart = only_swap(h.stopped("a"))
    assert restart.target == "a"
    assert grants(h.swap_done(restart.swap_id)) == [2]


def test_on_stopped_drains_the_queue() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    h.unload(["a"])
    waiting = h.request(2, "a")
    assert positions(waiting) == {2: 1}
    assert swaps(waiting) == []
    start = only_swap(h.stopped("a"))
    assert h.phase("a") is Phase.STARTING
    assert start.target == "a"


# ---- TTL -----------------------------------------------------------------------------------


def ttl_harness(ttl: float) -> Harness:
    rules = {m: ModelRules(ttl=ttl) for m in MODELS}
    return one_at_a_time(rules)


def test_ttl_measured_from_last_release() -> None:
    h = ttl_harness(30)
    swap = only_swap(h.request(1, "a"))
    h.now = 5
    h.swap_done(swap.swap_id)
    assert h.scheduler.next_deadline() is None  # leased
    assert h.tick(100) == []
    h.served(1)
    assert h.scheduler.next_deadline() == 130
    assert h.tick(129.9) == []
    assert h.tick(130) == [StopModels(frozenset({"a"}), StopReason.TTL)]
    assert h.scheduler.next_deadline() is None
    assert h.phase("a") is Phase.STOPPING


def test_ttl_from_ready_when_never_used() -> None:
    h = ttl_harness(10)
    swap = only_swap(h.request(1, "a"))
    h.cancel(1)
    h.now = 3
    h.swap_done(swap.swap_id)
    assert h.scheduler.next_deadline() == 13


def test_ttl_zero_never_stops() -> None:
    h = ttl_harness(0)
    ready(h, "a", 1)
    assert h.scheduler.next_deadline() is None
    assert h.tick(1e9) == []


def test_ttl_not_while_a_swap_is_about_to_evict() -> None:
    h = ttl_harness(5)
    ready(h, "a", 1)
    h.request(2, "a")
    h.request(3, "b")
    h.now = 100
    h.served(2)  # launches the swap: a is evicted, not ttl-stopped
    assert h.tick(1000) == []


def test_request_during_ttl_stop_starts_fresh_after_stop() -> None:
    # llama-swap #946 at the scheduler level: no request may wait on a stop nobody restarts.
    h = ttl_harness(1)
    ready(h, "a", 1)
    assert stops(h.tick(10))[0].reason is StopReason.TTL
    effects = h.request(2, "a")
    assert grants(effects) == [] and swaps(effects) == []
    restart = only_swap(h.stopped("a"))
    assert restart == StartSwap(restart.swap_id, "a", frozenset())
    assert grants(h.swap_done(restart.swap_id)) == [2]


# ---- crash and shutdown --------------------------------------------------------------------


def test_crash_of_ready_model_restarts_on_next_request() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    assert h.exited("a") == []
    assert h.phase("a") is Phase.STOPPED
    assert only_swap(h.request(2, "a")).target == "a"


def test_exit_of_a_non_ready_model_is_ignored() -> None:
    h = one_at_a_time()
    only_swap(h.request(1, "a"))
    h.exited("a")  # the swap reports the failure, not the exit
    assert h.phase("a") is Phase.STARTING


def test_shutdown_rejects_waiters_and_later_requests() -> None:
    h = one_at_a_time()
    ready(h, "a", 1)
    h.request(2, "a")  # leased
    h.request(3, "b")  # draining swap
    h.request(4, "c")  # queued: collides with b's swap
    assert len(h.scheduler.active_swaps()) == 1
    effects = h.shutdown()
    assert {r.request_id: r.status for r in rejects(effects).values()} == {3: 503, 4: 503}
    assert rejects(h.request(5, "a"))[5].status == 503
    # The leased request finishes normally; nothing is started after shutdown.
    assert swaps(h.served(2)) == []


def test_every_effect_type_is_a_frozen_value() -> None:
    grant = Grant(1, "a")
    assert grant == Grant(1, "a")
    assert hash(StartSwap(1, "a", frozenset({"b"}))) == hash(StartSwap(1, "a", frozenset({"b"})))
