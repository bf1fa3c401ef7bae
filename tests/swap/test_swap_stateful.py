"""A hypothesis state machine: random requests, completions, stops, unloads, ticks and crashes
against the scheduler, with a model of the world that carries out its effects.

Checked on every effect and after every step: a leased model is never evicted or TTL-stopped;
no duplicate start; no two launched swaps collide; the running set satisfies the policy; the
scheduler's phases match the world's processes; every request gets at most one outcome; and at
quiescence every request got exactly one and nothing is left reserved.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from swap_harness import Group, compiled, group_policy, matrix_policy

from llamaswap.config.matrix import CompiledMatrix
from llamaswap.swap.effects import (
    CancelStart,
    Effect,
    Grant,
    QueuePosition,
    Reject,
    StartSwap,
    StopModels,
    StopReason,
)
from llamaswap.swap.policy import EvictionPolicy
from llamaswap.swap.rules import Admission, Backoff, Policy, SchedulerSettings
from llamaswap.swap.scheduler import ModelRules, Phase, Scheduler


@dataclass(frozen=True)
class World:
    """One random configuration: models with their rules, and a group or matrix policy."""

    rules: dict[str, ModelRules]
    groups: dict[str, Group] | None
    matrix: CompiledMatrix | None
    settings: SchedulerSettings


@st.composite
def worlds(draw: st.DrawFn) -> World:
    count = draw(st.integers(3, 5))
    models = [f"m{i}" for i in range(count)]
    rules = {
        m: ModelRules(
            priority=draw(st.integers(0, 2)),
            concurrency_limit=draw(st.integers(1, 6)),
            ttl=draw(st.sampled_from([0.0, 3.0])),
            admission=draw(st.sampled_from(list(Admission))),
            max_queue=draw(st.integers(1, 6)),
            max_wait=draw(st.sampled_from([0.0, 3.0, 10.0])),
        )
        for m in models
    }
    settings = SchedulerSettings(
        policy=draw(st.sampled_from(list(Policy))),
        min_resident=draw(st.sampled_from([0.0, 2.0])),
        cancel_abandoned_loads=draw(st.booleans()),
        backoff=Backoff(after=draw(st.sampled_from([0, 2])), initial=3.0, maximum=6.0),
    )
    likely = st.sampled_from([True, True, False])
    if draw(st.booleans()):
        assignment = [draw(st.integers(0, count - 1)) for _ in models]
        groups = {
            f"g{g}": Group(
                tuple(m for m, a in zip(models, assignment, strict=True) if a == g),
                swap=draw(likely),
                exclusive=draw(likely),
                persistent=draw(st.booleans()),
            )
            for g in sorted(set(assignment))
        }
        return World(rules, groups, None, settings)
    subsets = st.lists(st.sampled_from(models), min_size=1, max_size=3, unique=True)
    alternatives = st.lists(subsets, min_size=1, max_size=3)
    sets = {
        f"s{i}": " | ".join(f"({' & '.join(alt)})" for alt in draw(alternatives))
        for i in range(draw(st.integers(1, 3)))
    }
    costs = draw(st.dictionaries(st.sampled_from(models), st.integers(1, 3), max_size=3))
    return World(rules, None, compiled(models, sets, costs), settings)


class SchedulerMachine(RuleBasedStateMachine):
    # ---- setup -----------------------------------------------------------------------------

    @initialize(world=worlds())
    def setup(self, world: World) -> None:
        self.world = world
        policy: EvictionPolicy
        if world.groups is not None:
            policy = group_policy(**world.groups)
        else:
            assert world.matrix is not None
            policy = matrix_policy(world.matrix)
        self.scheduler = Scheduler(world.rules, policy, world.settings)
        self.models = sorted(world.rules)
        self.proc: dict[str, Phase] = dict.fromkeys(self.models, Phase.STOPPED)
        self.launched: dict[int, StartSwap] = {}
        self.refresh: set[int] = set()  # launched swaps whose target was ready already
        self.pending_stops: set[str] = set()
        self.leases: dict[int, str] = {}
        self.waiting: dict[int, str] = {}
        self.done: set[int] = set()  # got a Grant or a Reject
        self.gone: set[int] = set()  # cancelled while waiting: must never hear back
        self.next_id = 1
        self.now = 0.0
        self.closed = False

    # ---- the world carrying out effects ----------------------------------------------------

    def apply(self, effects: list[Effect]) -> None:
        granted: set[str] = set()  # a model granted in this batch must not be stopped in it
        for effect in effects:
            if isinstance(effect, Grant):
                granted.add(effect.model)
                self.outcome(effect.request_id)
                assert self.proc[effect.model] is Phase.READY, "granted to a process not ready"
                assert self.waiting.pop(effect.request_id) == effect.model
                self.leases[effect.request_id] = effect.model
            elif isinstance(effect, Reject):
                self.outcome(effect.request_id)
                self.waiting.pop(effect.request_id, None)
            elif isinstance(effect, QueuePosition):
                assert effect.request_id in self.waiting
            elif isinstance(effect, StartSwap):
                assert not effect.evict & granted
                self.start(effect)
            elif isinstance(effect, CancelStart):
                assert effect.swap_id in self.launched
                assert effect.swap_id not in self.refresh
                assert self.world.settings.cancel_abandoned_loads
            else:
                assert not effect.models & granted, "granted, then stopped at once"
                self.stop(effect)

    def outcome(self, request_id: int) -> None:
        assert request_id not in self.done, "two outcomes for one request"
        assert request_id not in self.gone, "an outcome for a cancelled request"
        self.done.add(request_id)

    def start(self, swap: StartSwap) -> None:
        leased = set(self.leases.values())
        assert not swap.evict & leased, "a swap evicts a model holding a lease"
        assert swap.target not in swap.evict
        assert self.proc[swap.target] in (Phase.STOPPED, Phase.READY), "duplicate start"
        if self.proc[swap.target] is Phase.READY:
            assert swap.evict, "a swap to a ready model that evicts nothing"
            self.refresh.add(swap.swap_id)
        assert swap.target in self.waiting.values(), "a swap launched for nobody"
        for other in self.launched.values():
            assert other.target != swap.target
            assert swap.target not in other.evict, "starts a model another swap stops"
            assert other.target not in swap.evict, "stops a model another swap starts"
            assert not swap.evict & other.evict
        self.launched[swap.swap_id] = swap
        for model in swap.evict:
            self.proc[model] = Phase.STOPPING
        if swap.swap_id not in self.refresh:
            self.proc[swap.target] = Phase.STARTING

    def stop(self, effect: StopModels) -> None:
        if effect.reason is not StopReason.UNLOAD:
            assert not effect.models & set(self.leases.values()), "ttl stop of a leased model"
        for model in effect.models:
            assert self.proc[model] is Phase.READY
            self.proc[model] = Phase.STOPPING
        self.pending_stops |= effect.models

    def evicted_by_launched(self, model: str) -> bool:
        return any(model in s.evict for s in self.launched.values())

    # ---- rules -----------------------------------------------------------------------------

    @rule(data=st.data())
    def requests(self, data: st.DataObject) -> None:
        for model in data.draw(st.lists(st.sampled_from(self.models), min_size=1, max_size=4)):
            self.request(model)

    def request(self, model: str) -> None:
        request_id = self.next_id
        self.next_id += 1
        rules = self.world.rules[model]
        waiting = sum(1 for m in self.waiting.values() if m == model)
        leased = sum(1 for m in self.leases.values() if m == model)
        if rules.admission is Admission.LIMIT:
            over = waiting + leased >= rules.concurrency_limit
        else:
            over = waiting >= rules.max_queue
        backing_off = self.scheduler.backoff(model, self.now) is not None
        self.waiting[request_id] = model
        effects = self.scheduler.on_request(request_id, model, self.now)
        if not self.closed:
            refused = [e for e in effects if isinstance(e, Reject) and e.request_id == request_id]
            if backing_off:
                assert [e.status for e in refused] == [503], effects
            else:
                assert any(e.status == 429 for e in refused) == over, (over, effects)
        self.apply(effects)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def serve(self, data: st.DataObject) -> None:
        leases = st.lists(st.sampled_from(sorted(self.leases)), min_size=1, max_size=3, unique=True)
        for request_id in data.draw(leases):
            del self.leases[request_id]
            self.apply(self.scheduler.on_served(request_id, self.now))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        known = sorted([*self.waiting, *self.leases])
        request_id = data.draw(st.sampled_from([*known, 10_000]))
        if request_id in self.waiting:
            del self.waiting[request_id]
            self.gone.add(request_id)
        self.leases.pop(request_id, None)
        self.apply(self.scheduler.on_cancel(request_id, self.now))

    @precondition(lambda self: self.launched)
    @rule(data=st.data(), fail=st.integers(0, 4))
    def complete_swap(self, data: st.DataObject, fail: int) -> None:
        ok = fail != 0
        self.swap_done(data.draw(st.sampled_from(sorted(self.launched))), ok)

    def swap_done(self, swap_id: int, ok: bool) -> None:
        swap = self.launched.pop(swap_id)
        if swap_id in self.refresh:
            self.refresh.discard(swap_id)
            ok = True  # the target is ready already: making it ready cannot fail
        for model in swap.evict:
            if not self.evicted_by_launched(model):
                self.proc[model] = Phase.STOPPED
        self.proc[swap.target] = Phase.READY if ok else Phase.STOPPED
        self.apply(self.scheduler.on_swap_done(swap_id, None if ok else "boom", self.now))

    @precondition(lambda self: self.pending_stops)
    @rule(data=st.data())
    def finish_stop(self, data: st.DataObject) -> None:
        self.stop_done(data.draw(st.sampled_from(sorted(self.pending_stops))))

    def stop_done(self, model: str) -> None:
        self.pending_stops.discard(model)
        if self.proc[model] is Phase.STOPPING and not self.evicted_by_launched(model):
            self.proc[model] = Phase.STOPPED
        self.apply(self.scheduler.on_stopped(model, self.now))

    @rule(data=st.data())
    def unload(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 3)):  # rarer than the rest: it rejects every waiter
            return
        every = st.none()
        some = st.lists(st.sampled_from(self.models), max_size=3, unique=True)
        models = data.draw(st.one_of(every, some))
        self.apply(self.scheduler.on_unload(models, self.now))

    @rule(dt=st.sampled_from([0.5, 2.0, 5.0, 10.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        deadline = self.scheduler.next_deadline()
        effects = self.scheduler.on_tick(self.now)
        due = deadline is not None and self.now >= deadline
        if self.world.settings.policy is Policy.FIFO:
            assert bool(effects) == due, (deadline, self.now, effects)
        elif effects:  # batch: a deadline may pass without a change (still colliding)
            assert due, (deadline, self.now, effects)
        self.apply(effects)

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        ready = [m for m in self.models if self.proc[m] is Phase.READY]
        if not ready:
            return
        if data.draw(st.integers(0, 2)):
            return
        model = data.draw(st.sampled_from(ready))
        self.proc[model] = Phase.STOPPED
        self.apply(self.scheduler.on_exited(model, self.now))

    @precondition(lambda self: not self.closed)
    @rule(data=st.data())
    def shutdown(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 19)):  # rare: it ends the interesting part
            return
        self.closed = True
        effects = self.scheduler.on_shutdown()
        assert all(isinstance(e, Reject) and e.status == 503 for e in effects)
        self.apply(effects)
        assert not self.waiting

    # ---- invariants ------------------------------------------------------------------------

    @invariant()
    def phases_match_the_world(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        for model in self.models:
            assert self.scheduler.phase(model) is self.proc[model], model
        for swap in self.launched.values():
            if swap.swap_id not in self.refresh:
                assert self.scheduler.phase(swap.target) is Phase.STARTING

    @invariant()
    def counts_match(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        assert self.scheduler.queue_depth() == len(self.waiting)
        for model in self.models:
            held = sum(1 for m in self.leases.values() if m == model)
            assert self.scheduler.lease_count(model) == held

    @invariant()
    def running_set_satisfies_the_policy(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        running = {m for m, p in self.proc.items() if p in (Phase.READY, Phase.STARTING)}
        if self.world.groups is not None:
            for group in self.world.groups.values():
                if group.swap:
                    assert len(running & set(group.members)) <= 1, (group, running)
        else:
            assert self.world.matrix is not None
            assert len(running) <= 1 or self.world.matrix.can_coexist(running), running

    # ---- quiescence ------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        for _ in range(500):
            if self.leases:
                request_id = min(self.leases)
                del self.leases[request_id]
                self.apply(self.scheduler.on_served(request_id, self.now))
            elif self.launched:
                self.swap_done(min(self.launched), ok=True)
            elif self.pending_stops:
                self.stop_done(min(self.pending_stops))
            elif self.waiting and (deadline := self.scheduler.next_deadline()) is not None:
                # Batch may hold a waiter until a deadline (maxWait, minResident, a stream
                # of requests ending): let that time pass.
                self.now = max(self.now, deadline)
                self.apply(self.scheduler.on_tick(self.now))
            else:
                break
            self.phases_match_the_world()
            self.running_set_satisfies_the_policy()
        assert not self.waiting, f"never answered: {self.waiting}"
        assert self.scheduler.queue_depth() == 0
        assert self.scheduler.active_swaps() == []
        assert self.scheduler.leased_models() == frozenset()
        assert self.done | self.gone == set(range(1, self.next_id)), "a request was lost"
        # Nothing is left reserved: a full budget is admitted again (once any backoff ended).
        self.now += 1000.0
        if not self.closed:
            for model in self.models:
                rules = self.world.rules[model]
                budget = rules.concurrency_limit
                if rules.admission is Admission.QUEUE:
                    budget = min(rules.concurrency_limit, rules.max_queue)
                for _ in range(budget):
                    self.next_id += 1
                    effects = self.scheduler.on_request(self.next_id, model, self.now)
                    assert not any(isinstance(e, Reject) for e in effects), (model, effects)


SchedulerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_swap_scheduler_state_machine = SchedulerMachine.TestCase
