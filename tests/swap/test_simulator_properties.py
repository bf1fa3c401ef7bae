"""Properties of the scheduler on the simulator's virtual clock (issue 9, item 8).

Hypothesis draws whole traces (models with their load times, arrivals with service times) and
a setup (policy, maxWait, limits, stop time); `llamaswap.testing.simulator` replays them
through the pure scheduler, carrying out its effects, and checks the lease rule as it goes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swap_harness import Group

from llamaswap.config.model import DEFAULT_MAX_WAIT_S
from llamaswap.swap.effects import Grant, StartSwap, StopModels, StopReason
from llamaswap.swap.policy import GroupPolicy
from llamaswap.swap.rules import Admission, ModelRules, Policy, SchedulerSettings
from llamaswap.swap.scheduler import Scheduler
from llamaswap.testing.sim_traces import burst, sustained
from llamaswap.testing.simulator import (
    Arrival,
    Replay,
    Result,
    Setup,
    Trace,
    scheduler_for,
    simulate,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def traces(draw: st.DrawFn, max_requests: int = 30) -> Trace:
    count = draw(st.integers(2, 4))
    models = [f"m{i}" for i in range(count)]
    load = {m: draw(st.sampled_from([0.5, 1.0, 2.0, 5.0])) for m in models}
    t, arrivals = 0.0, []
    for _ in range(draw(st.integers(1, max_requests))):
        t += draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]))
        service = draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]))
        arrivals.append(Arrival(t, draw(st.sampled_from(models)), service))
    return Trace(tuple(arrivals), load)


@st.composite
def setups(draw: st.DrawFn, policy: Policy | None = None) -> Setup:
    return Setup(
        policy=policy or draw(st.sampled_from(list(Policy))),
        max_wait=draw(st.sampled_from([0.0, 1.0, 5.0, 10.0, 30.0, math.inf])),
        max_queue=draw(st.integers(1, 40)),
        concurrency_limit=draw(st.integers(1, 10)),
        admission=draw(st.sampled_from(list(Admission))),
        min_resident=draw(st.sampled_from([0.0, 5.0])),
        stop_time=draw(st.sampled_from([0.0, 0.1, 1.0])),
    )


def test_the_simulator_reports_breaches_of_the_lease_rule() -> None:
    """The checks the properties rely on: fed effects a broken scheduler could return."""
    trace = Trace((Arrival(0.0, "m0", 1.0), Arrival(0.0, "m1", 1.0)), {"m0": 1.0, "m1": 1.0})
    setup = Setup(Policy.FIFO)
    replay = Replay(trace, setup, scheduler_for(trace, setup))
    replay.apply([Grant(0, "m0")])  # m0 never started
    replay.apply([StartSwap(1, "m1", frozenset({"m0"}))])  # evicts m0 under request 0's lease
    replay.apply([Grant(1, "m1")])  # m1 is loading, not up
    replay.apply([StopModels(frozenset({"m1"}), StopReason.TTL)])  # under request 1's lease
    assert [v.split(": ", 1)[1] for v in replay.violations] == [
        "request 0 granted on m0 while it is down",
        "m0 evicted by swap 1 while 1 lease(s) hold it",
        "request 1 granted on m1 while it is loading",
        "m1 stopped while 1 lease(s) hold it",
    ]


def answered(result: Result) -> bool:
    return all(o.finished is not None for o in result.outcomes)


@FAST
@given(traces(), setups())
def test_a_leased_model_is_never_stopped_and_every_request_is_answered(
    trace: Trace, setup: Setup
) -> None:
    result = simulate(trace, setup)
    # Breaches: a model stopped (evicted or TTL/unload) while a lease holds it, a grant on
    # a model that is not up, a swap to a model that is loading or stopping.
    assert result.violations == ()
    assert answered(result)
    assert result.loads >= 1


@FAST
@given(traces(), setups())
def test_no_refusal_below_max_queue(trace: Trace, setup: Setup) -> None:
    setup = replace(setup, admission=Admission.QUEUE)
    result = simulate(trace, setup)
    for outcome in result.outcomes:
        refused = outcome.status == 429
        assert refused == (outcome.queued_ahead >= setup.max_queue), outcome


def swap_cycle(trace: Trace, setup: Setup) -> float:
    """The longest a model change can take: drain the longest service, stop, load."""
    longest_service = max(a.service for a in trace.arrivals)
    return longest_service + setup.stop_time + max(trace.load_time.values())


@FAST
@given(traces(), setups(Policy.BATCH))
def test_batch_wait_is_bounded_by_max_wait_plus_one_cycle_per_model(
    trace: Trace, setup: Setup
) -> None:
    # Enough in-flight slots that no request waits behind its own model's requests.
    setup = replace(
        setup,
        admission=Admission.QUEUE,
        max_queue=1000,
        concurrency_limit=len(trace.arrivals),
    )
    result = simulate(trace, setup)
    # Once overdue, a request's model goes next among the newer overdue ones, but not before
    # older overdue models (oldest first, each at most once) and not before a load already
    # under way: so one swap cycle per model, its own included.
    bound = setup.max_wait + len(trace.models) * swap_cycle(trace, setup)
    for outcome in result.outcomes:
        assert outcome.wait is not None
        assert outcome.wait <= bound + 1e-6, (outcome, bound)


def test_issue_bound_does_not_cover_a_load_already_under_way() -> None:
    """Documented exception to "maxWait + one load + the in-flight service it drains": a load
    under way when a request becomes overdue is not aborted. m1's request is overdue at once
    (maxWait 0) but m0's load started first: m0 loads (0.5), serves (0.1), then m1 loads (0.5).
    The property above allows one swap cycle per model instead."""
    trace = Trace((Arrival(0.0, "m0", 0.1), Arrival(0.0, "m1", 0.1)), {"m0": 0.5, "m1": 0.5})
    setup = Setup(Policy.BATCH, max_wait=0.0, min_resident=0.0, stop_time=0.0)
    result = simulate(trace, setup)
    assert result.outcomes[1].wait == pytest.approx(1.1)
    assert result.outcomes[1].wait > 0.0 + 0.5 + 0.1 + 0.0


def test_the_deadline_line_sends_a_request_first_rather_than_split_a_long_batch() -> None:
    """Regression: this trace was a documented exception to swaps(batch) <= swaps(fifo). At
    0.6 s batch loaded m0 for its three waiting requests (most work per swap) rather than m2's
    one, but one in-flight slot serves them one by one; m2's request became overdue (maxWait
    1 s) after the first, so m0 was evicted with two still waiting and loaded again: 5 loads.
    Counting deadlines ahead (`swap.deadlines`), m2 is due by 1.2 s: a load and a batch of m0
    first would start its load after its deadline (1.5 s). So m2 goes before m0's batch, as
    in fifo (m0 m1 m2 m0): 4 loads, and m2 waits no longer than maxWait + its load."""
    trace = Trace(
        (
            Arrival(0.0, "m0", 0.1),
            Arrival(0.0, "m1", 0.1),
            Arrival(0.5, "m2", 0.1),
            *(Arrival(1.0, "m0", 0.1) for _ in range(3)),
        ),
        dict.fromkeys(("m0", "m1", "m2"), 0.5),
    )
    fifo = Setup(Policy.FIFO, concurrency_limit=1, min_resident=0.0, stop_time=0.0)
    assert simulate(trace, fifo).loads == 4
    result = simulate(trace, replace(fifo, policy=Policy.BATCH, max_wait=1.0))
    assert result.loads == 4
    m2_wait = result.outcomes[2].wait
    assert m2_wait is not None and m2_wait <= 1.0 + 0.5 + 1e-9


def test_batch_can_swap_more_than_fifo_when_a_later_request_wants_the_batched_model() -> None:
    """Documented exception, with no in-flight limit and a maxWait no request reaches (2 s; its
    quarter, 0.5 s, is how long m0's stream is held after its last request): m1 loads first; then
    batch serves m0's two requests before m2's one (most work per swap), fifo the other way
    round. So fifo ends with m0 loaded and the request at 3 s finds it ready (3 loads); batch
    ends with m2 and loads m0 again (4). No policy that cannot see the future does fewer swaps
    than fifo on every trace: the order that is best for the queue of now can leave the wrong
    model loaded for the next arrival."""
    trace = Trace(
        (
            Arrival(0.0, "m1", 0.1),
            Arrival(0.0, "m2", 0.1),
            Arrival(0.0, "m0", 0.1),
            Arrival(0.0, "m0", 0.1),
            Arrival(3.0, "m0", 0.1),
        ),
        dict.fromkeys(("m0", "m1", "m2"), 0.5),
    )
    fifo = Setup(Policy.FIFO, min_resident=0.0, stop_time=0.0)
    assert simulate(trace, fifo).loads == 3
    assert simulate(trace, replace(fifo, policy=Policy.BATCH, max_wait=2.0)).loads == 4


def test_batch_swaps_fewer_than_fifo_over_the_seeded_traces() -> None:
    """The per-trace inequality has exceptions (above), so the claim is the aggregate over the
    benchmark's traces, at the default maxWait."""
    for make in (burst, sustained):
        seeds = range(1, 11)
        fifo = sum(simulate(make(seed), Setup(Policy.FIFO)).loads for seed in seeds)
        batch = sum(
            simulate(make(seed), Setup(Policy.BATCH, max_wait=DEFAULT_MAX_WAIT_S)).loads
            for seed in seeds
        )
        assert batch < fifo


# ---- scheduler bugs the simulator found (fixed in swap/, not here) ----------------------------


def test_a_tick_at_next_deadline_places_the_overdue_request() -> None:
    """Regression: overdue was `now - arrived >= max_wait` while the deadline was
    `arrived + max_wait`; with arrived=0.2, max_wait=0.5 the deadline is 0.7 and
    0.7 - 0.2 < 0.5 in floats, so the tick at the deadline changed nothing."""
    rules = ModelRules(max_wait=0.5, concurrency_limit=1)
    scheduler = Scheduler(
        {"a": rules, "b": rules},
        GroupPolicy({"one": Group(("a", "b"))}),
        SchedulerSettings(policy=Policy.BATCH, min_resident=0.0, patience=0.0, stop_time=0.0),
    )
    [start] = scheduler.on_request(1, "a", 0.0)
    assert isinstance(start, StartSwap)
    assert scheduler.on_swap_done(start.swap_id, None, 0.0, 0.5) == [Grant(1, "a")]
    scheduler.on_request(3, "a", 0.1)  # waits for a's only slot: a still has work
    scheduler.on_request(2, "b", 0.2)  # waits: a has a request waiting for it
    assert scheduler.active_swaps() == []
    # a's own waiting request needs no swap: only b's deadline wakes the scheduler.
    deadline = scheduler.next_deadline()
    assert deadline == 0.2 + 0.5
    scheduler.on_tick(deadline)
    # Overdue: a swap to b is planned (it launches once request 1's lease ends).
    assert [s.target for s in scheduler.active_swaps()] == ["b"]
