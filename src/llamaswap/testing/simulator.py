"""Arrival traces replayed through the pure scheduler on a virtual clock. Nothing runs.

A small discrete-event loop carries out the scheduler's effects the way the router does:
  * `StartSwap`: its evicted models stop (`stop_time`, together), then the target loads (its
    modelled load time, when it is not up already); then `on_swap_done` with the load time;
  * `Grant`: the request holds a lease for its service time, then `on_served`;
  * `StopModels`: each model is down after `stop_time`, then `on_stopped`;
  * `Reject`: the request's outcome is its status (a 429 is a refusal);
  * `on_tick` at the scheduler's `next_deadline()`, as the router's ttl loop does.
Every model is in one exclusive group (one model at a time, llama-swap's default setup).

While it runs the simulator checks the rule that makes swapping safe (a model holding a lease
is never stopped, and a lease is only granted on a model that is up) and records each breach
in `Result.violations`, so properties and the benchmark can tell a wrong answer from a slow one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from llamaswap.swap.effects import CancelStart, Effect, Grant, Reject, StartSwap, StopModels
from llamaswap.swap.policy import GroupPolicy
from llamaswap.swap.rules import (
    DEFAULT_IN_FLIGHT_LIMIT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MIN_RESIDENT_S,
    Admission,
    ModelRules,
    Policy,
    SchedulerSettings,
)
from llamaswap.swap.scheduler import Scheduler

# A timer never fires at its exact deadline; a tick this much later also keeps float rounding
# (`now - arrived` one ulp under `max_wait`) from hiding an overdue request at its deadline.
TICK_LATENCY = 1e-6
# Far more events than any trace here needs: past it the run is reported as a runaway.
MAX_EVENTS = 1_000_000


@dataclass(frozen=True)
class Arrival:
    """A request for `model` at `at` seconds that the upstream answers in `service` seconds."""

    at: float
    model: str
    service: float


@dataclass(frozen=True)
class Trace:
    """Arrivals in time order, and each model's load time in seconds."""

    arrivals: tuple[Arrival, ...]
    load_time: Mapping[str, float]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self.load_time))


@dataclass(frozen=True)
class Setup:
    """The scheduler settings a trace is replayed with (the same for every model)."""

    policy: Policy
    max_wait: float = math.inf
    max_queue: int = DEFAULT_MAX_QUEUE
    concurrency_limit: int = DEFAULT_IN_FLIGHT_LIMIT
    admission: Admission = Admission.QUEUE
    min_resident: float = DEFAULT_MIN_RESIDENT_S
    stop_time: float = 0.1


@dataclass(frozen=True)
class Outcome:
    """What one request experienced. `granted` is None when it was refused (`status`).
    `queued_ahead`: requests for the same model admitted and not yet granted when it arrived
    (counted by the simulator from the effects, not asked of the scheduler)."""

    request_id: int
    model: str
    arrived: float
    queued_ahead: int = 0
    granted: float | None = None
    finished: float | None = None
    status: int | None = None

    @property
    def wait(self) -> float | None:
        return None if self.granted is None else self.granted - self.arrived


@dataclass(frozen=True)
class Result:
    """One replay: per-request outcomes (by request id = arrival index), loads, breaches."""

    outcomes: tuple[Outcome, ...]
    loads: int
    violations: tuple[str, ...]

    @property
    def waits(self) -> list[float]:
        return [o.wait for o in self.outcomes if o.wait is not None]

    @property
    def refusals(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 429)

    @property
    def unanswered(self) -> int:
        return sum(1 for o in self.outcomes if o.finished is None)

    @property
    def makespan(self) -> float:
        """First arrival → last answer."""
        ends = [o.finished for o in self.outcomes if o.finished is not None]
        if not ends:
            return 0.0
        return max(ends) - min(o.arrived for o in self.outcomes)


class _Process(StrEnum):
    DOWN = "down"
    LOADING = "loading"
    UP = "up"
    STOPPING = "stopping"


@dataclass(frozen=True)
class _Arrive:
    index: int


@dataclass(frozen=True)
class _SwapDone:
    swap: StartSwap
    load_time: float | None


@dataclass(frozen=True)
class _Served:
    request_id: int


@dataclass(frozen=True)
class _Stopped:
    model: str


@dataclass(frozen=True)
class _Tick:
    pass


_Event = _Arrive | _SwapDone | _Served | _Stopped | _Tick


@dataclass(frozen=True)
class _OneGroup:
    """All models in one `swap` + `exclusive` group, as `GroupPolicy` reads a group."""

    members: frozenset[str]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


def scheduler_for(trace: Trace, setup: Setup) -> Scheduler:
    rules = ModelRules(
        concurrency_limit=setup.concurrency_limit,
        admission=setup.admission,
        max_queue=setup.max_queue,
        max_wait=setup.max_wait,
    )
    policy = GroupPolicy({"all": _OneGroup(frozenset(trace.models))})
    settings = SchedulerSettings(policy=setup.policy, min_resident=setup.min_resident)
    return Scheduler(dict.fromkeys(trace.models, rules), policy, settings)


@dataclass
class Replay:
    """One replay in progress. `apply` is where effects are carried out and checked."""

    trace: Trace
    setup: Setup
    scheduler: Scheduler
    now: float = 0.0
    loads: int = 0
    heap: list[tuple[float, int, _Event]] = field(default_factory=list)
    seq: int = 0
    ticks: set[float] = field(default_factory=set)
    process: dict[str, _Process] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def at(self, when: float, event: _Event) -> None:
        heapq.heappush(self.heap, (when, self.seq, event))
        self.seq += 1

    def __post_init__(self) -> None:
        self.process = dict.fromkeys(self.trace.models, _Process.DOWN)
        self.leases = dict.fromkeys(self.trace.models, 0)
        self.waiting = dict.fromkeys(self.trace.models, 0)
        for i, arrival in enumerate(self.trace.arrivals):
            self.outcomes.append(Outcome(i, arrival.model, arrival.at))
            self.at(arrival.at, _Arrive(i))

    def run(self) -> Result:
        for _ in range(MAX_EVENTS):
            if not self.heap:
                break
            self.now, _, event = heapq.heappop(self.heap)
            self.apply(self.handle(event))
            self.schedule_tick()
        else:
            self.violations.append(f"runaway: over {MAX_EVENTS} events")
        return Result(tuple(self.outcomes), self.loads, tuple(self.violations))

    def handle(self, event: _Event) -> list[Effect]:
        s, now = self.scheduler, self.now
        if isinstance(event, _Arrive):
            model = self.trace.arrivals[event.index].model
            ahead = self.waiting[model]
            self.outcomes[event.index] = replace(self.outcomes[event.index], queued_ahead=ahead)
            self.waiting[model] += 1
            return s.on_request(event.index, model, now)
        if isinstance(event, _SwapDone):
            for model in event.swap.evict:
                self.process[model] = _Process.DOWN
            self.process[event.swap.target] = _Process.UP
            return s.on_swap_done(event.swap.swap_id, None, now, event.load_time)
        if isinstance(event, _Served):
            model = self.outcomes[event.request_id].model
            self.leases[model] -= 1
            self.outcomes[event.request_id] = replace(self.outcomes[event.request_id], finished=now)
            return s.on_served(event.request_id, now)
        if isinstance(event, _Stopped):
            self.process[event.model] = _Process.DOWN
            return s.on_stopped(event.model, now)
        self.ticks.discard(now)
        return s.on_tick(now)

    def apply(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Grant):
                self.grant(effect)
            elif isinstance(effect, Reject):
                outcome = self.outcomes[effect.request_id]
                self.waiting[outcome.model] -= 1
                self.outcomes[effect.request_id] = replace(
                    outcome, finished=self.now, status=effect.status
                )
            elif isinstance(effect, StartSwap):
                self.start_swap(effect)
            elif isinstance(effect, StopModels):
                for model in sorted(effect.models):
                    self.stop(model, "stopped")
                    self.at(self.now + self.setup.stop_time, _Stopped(model))
            elif isinstance(effect, CancelStart):
                # Only a cancelled request abandons a load, and no trace cancels any.
                self.violations.append(f"{self.now:.3f}: unexpected {effect}")

    def grant(self, grant: Grant) -> None:
        if self.process[grant.model] is not _Process.UP:
            self.violations.append(
                f"{self.now:.3f}: request {grant.request_id} granted on {grant.model} "
                f"while it is {self.process[grant.model]}"
            )
        self.leases[grant.model] += 1
        self.waiting[grant.model] -= 1
        outcome = self.outcomes[grant.request_id]
        self.outcomes[grant.request_id] = replace(outcome, granted=self.now)
        service = self.trace.arrivals[grant.request_id].service
        self.at(self.now + service, _Served(grant.request_id))

    def start_swap(self, swap: StartSwap) -> None:
        for model in sorted(swap.evict):
            self.stop(model, f"evicted by swap {swap.swap_id}")
        target = swap.target
        cold = self.process[target] is not _Process.UP
        if self.process[target] in (_Process.LOADING, _Process.STOPPING):
            state = self.process[target]
            self.violations.append(f"{self.now:.3f}: swap to {target} while it is {state}")
        if cold:
            self.loads += 1
            self.process[target] = _Process.LOADING
        load = self.trace.load_time[target] if cold else None
        stop = self.setup.stop_time if swap.evict else 0.0
        self.at(self.now + stop + (load or 0.0), _SwapDone(swap, load))

    def stop(self, model: str, why: str) -> None:
        if self.leases[model]:
            self.violations.append(
                f"{self.now:.3f}: {model} {why} while {self.leases[model]} lease(s) hold it"
            )
        self.process[model] = _Process.STOPPING

    def schedule_tick(self) -> None:
        deadline = self.scheduler.next_deadline()
        if deadline is None:
            return
        when = max(deadline, self.now) + TICK_LATENCY
        if when not in self.ticks:
            self.ticks.add(when)
            self.at(when, _Tick())


def simulate(trace: Trace, setup: Setup) -> Result:
    """Replay `trace` through a fresh scheduler configured by `setup`."""
    return Replay(trace, setup, scheduler_for(trace, setup)).run()
