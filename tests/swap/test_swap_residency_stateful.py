"""A hypothesis state machine for placement by memory: random needs on two devices, sleepers
and host memory; random requests, completions, swap ends and crashes.

Checked after every step: the models holding device memory (ready or starting) never need
more than a device has; a swap never evicts a model holding a lease; a model is asleep only
if it can sleep, and the sleepers fit in host memory; every request gets at most one outcome.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from swap_harness import Group, group_policy

from llamaswap.swap.effects import Effect, Grant, Reject, StartSwap, StopModels
from llamaswap.swap.placement import Need
from llamaswap.swap.residency import Residency
from llamaswap.swap.scheduler import ModelRules, Phase, Scheduler

G = 1024**3
CAPACITY = {"gpu0": 24 * G, "gpu1": 12 * G}
MODELS = ("m0", "m1", "m2", "m3", "m4")
needs_strategy = st.one_of(
    st.builds(Need, st.integers(2, 12).map(lambda g: g * G)),
    st.builds(Need, st.integers(2, 10).map(lambda g: g * G), st.just(("gpu1",))),
    st.builds(Need, st.just({"gpu0": 8 * G, "gpu1": 4 * G})),
)


class PlacementMachine(RuleBasedStateMachine):
    @initialize(
        needs=st.lists(needs_strategy, min_size=len(MODELS), max_size=len(MODELS)),
        sleepers=st.sets(st.sampled_from(MODELS)),
        host=st.sampled_from([None, 10 * G, 20 * G]),
    )
    def setup(self, needs: list[Need], sleepers: set[str], host: int | None) -> None:
        self.needs = dict(zip(MODELS, needs, strict=True))
        self.hosts = {m: 8 * G for m in sleepers}
        self.host = host
        residency = Residency(self.needs, CAPACITY, self.hosts, host)
        policy = group_policy(default=Group(MODELS))
        self.scheduler = Scheduler(dict.fromkeys(MODELS, ModelRules()), policy, residency=residency)
        self.launched: dict[int, StartSwap] = {}
        self.leases: dict[int, str] = {}
        self.done: set[int] = set()
        self.next_id = 1
        self.now = 0.0

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Grant | Reject):
                assert effect.request_id not in self.done, "two outcomes for one request"
                self.done.add(effect.request_id)
                if isinstance(effect, Grant):
                    self.leases[effect.request_id] = effect.model
            elif isinstance(effect, StartSwap):
                assert not effect.evict & set(self.leases.values()), "evicts a leased model"
                assert effect.sleep <= effect.evict
                assert all(m in self.hosts for m in effect.sleep), "sleeps a model that cannot"
                self.launched[effect.swap_id] = effect
            elif isinstance(effect, StopModels):
                for model in effect.models:
                    self.apply(self.scheduler.on_stopped(model, self.now))

    @rule(model=st.sampled_from(MODELS))
    def request(self, model: str) -> None:
        self.now += 1.0
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.apply(self.scheduler.on_request(request_id, model, self.now))

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def served(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.leases)))
        del self.leases[request_id]
        self.apply(self.scheduler.on_served(request_id, self.now))

    @precondition(lambda self: self.launched)
    @rule(data=st.data(), fail=st.booleans(), load=st.floats(0.1, 30.0))
    def swap_done(self, data: st.DataObject, fail: bool, load: float) -> None:
        swap_id = data.draw(st.sampled_from(sorted(self.launched)))
        del self.launched[swap_id]
        error = "failed" if fail else None
        self.apply(self.scheduler.on_swap_done(swap_id, error, self.now, load))

    @rule(model=st.sampled_from(MODELS))
    def crash(self, model: str) -> None:
        if self.scheduler.phase(model) in (Phase.READY, Phase.ASLEEP) and not any(
            m == model for m in self.leases.values()
        ):
            self.apply(self.scheduler.on_exited(model, self.now))

    @invariant()
    def devices_are_not_overcommitted(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        holding = [m for m in MODELS if self.scheduler.phase(m) in (Phase.READY, Phase.STARTING)]
        for device, capacity in CAPACITY.items():
            used = sum((self.scheduler.usage_of(m) or {}).get(device, 0) for m in holding)
            assert used <= capacity, f"{device}: {used / G} GiB of {capacity / G}: {holding}"

    @invariant()
    def sleepers_fit_in_host_memory(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        asleep = [m for m in MODELS if self.scheduler.phase(m) is Phase.ASLEEP]
        assert all(m in self.hosts for m in asleep)
        if self.host is not None:
            assert sum(self.hosts[m] for m in asleep) <= self.host


PlacementMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPlacement = PlacementMachine.TestCase
