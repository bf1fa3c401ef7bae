"""The sans-IO scheduler: who runs, who waits, who is evicted. Pure and synchronous.

The caller feeds it facts (a request arrived, a swap finished, a lease was released, a stop
finished, time passed) and carries out the effects it returns. Because granting a request and
registering its lease happen in the same call, no swap can slip between "the model is ready"
and "the request is forwarded": a model holding a lease is never stopped by a swap.

Per model the scheduler tracks a phase: STOPPED, STARTING (the target of a launched swap),
READY, STOPPING (evicted by a launched swap, or stopped for TTL/unload), ASLEEP (put to sleep
by a swap: process running, device memory freed; a request for it plans a swap that wakes it).

Admission (on arrival): a model in crash-loop backoff → 503 at once. `Admission.LIMIT`
(llama-swap's `concurrencyLimit`): every admitted request counts until it is served and the
excess gets 429. `Admission.QUEUE` (the default): at most `concurrency_limit` requests hold
leases at once and the rest wait, up to `max_queue` waiting, past which 429.

Decision tree for each waiting request, re-run whenever anything changes, in queue order
(`fifo`: priority desc, then arrival; `batch`: see `ordering.batch_order`):
  1. Its model is STOPPING → keep waiting (it is started again once the stop finishes).
  2. A swap targeting its model exists → join that swap's waiters (collation: one start),
     unless that swap is closed (unloaded or abandoned while starting) → keep waiting.
  3. Its model is READY, no swap is waiting to evict it and it has a free in-flight slot:
     a. the eviction policy (and placement, see below) evicts nothing → grant (lease) now;
     b. it still evicts running models (an `exclusive` group's member while a non-exclusive
        group's member runs) → plan a swap that evicts them, as in step 5, then grant.
  4. Its model is READY but a planned swap will evict it, or all its slots are taken → wait.
  5. Its model is STOPPED: in crash-loop backoff → 503. Else ask the policy which running
     models must go. If that collides with another swap (our evictions include its target or
     overlap its evictions, or a model to evict is already stopping) → keep waiting. Under
     `batch`, a model still in use (leases in flight or requests waiting for it) that became
     ready less than `min_resident` ago is not evicted, and one with waiting requests (or
     more expected, `swap.arrivals`) is not evicted unless the request's model is due
     (`swap.deadlines`: waiting longer would start some load past its `max_wait`) → keep
     waiting. Otherwise plan a swap.
  Under `batch`, step 3a also holds back a lease whose expected end would make a waiting
  model due: the loaded model stops taking work in time for the swap to start by deadline.
Placement by memory (`swap.residency`): for a model placed by memory, which running models
must go is `place()`'s cheapest set of idle placed models that makes room, plus what the
group policy evicts among the models *not* placed by memory (they hold unknown memory). Only
leased models in the way → the swap is planned with them and drains like any other (they are
stopped once their leases end, never before). It can never fit → 503 naming need and capacity.
The swap carries the chosen devices; `devices_of` tells them to whoever starts the process.
Evicted models with a sleep config are put to sleep rather than stopped while host memory
holds them (sleeping models are stopped for room, cheapest first); see `swap.residency`.
A planned swap launches (StartSwap) only once no model it evicts holds a lease; until then it
drains: its evicted models get no new leases, and its waiters return to the queue before every
re-run (so order holds and a swap nobody waits for any more is dropped). A launched swap
always completes; with `cancel_abandoned_loads` a start whose waiters all left is aborted.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from llamaswap.swap.arrivals import Arrivals
from llamaswap.swap.deadlines import Line, Timing, due, due_at, line_of
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
from llamaswap.swap.load_times import LoadTime, LoadTimes
from llamaswap.swap.ordering import Waiting, batch_order, fifo_order
from llamaswap.swap.phase import Phase
from llamaswap.swap.placement import eviction_cost
from llamaswap.swap.policy import EvictionPolicy
from llamaswap.swap.residency import Placed, Refused, Residency
from llamaswap.swap.rules import Admission, ModelRules, Policy, SchedulerSettings

__all__ = ["DEFAULT_WAKE_TIME_S", "BackoffState", "ModelRules", "Phase", "Scheduler"]

DEFAULT_WAKE_TIME_S = 1.0  # a guess of a wake's duration until one was seen
MAX_HOLD_BASIS_S = 120.0  # a `max_wait` longer than this holds a stream as long as this one


@dataclass(frozen=True)
class BackoffState:
    """A model refused because its starts keep failing, until `until` (scheduler time)."""

    failures: int
    until: float
    last_error: str


@dataclass
class _Swap:
    swap_id: int
    target: str
    evict: frozenset[str]
    waiters: list[Waiting] = field(default_factory=list)
    launched: bool = False
    # The target was READY already: the swap only evicts what its group rules evict.
    refresh: bool = False
    # No new waiters join: the target is stopped again once started (unload), or its start
    # is being aborted because every waiter left (abandoned).
    unload_when_done: bool = False
    abandoned: bool = False
    # Where placement by memory puts the target (None: not placed by memory).
    placed: Placed | None = None
    # Evicted models put to sleep instead of stopped; the target is woken, not started.
    sleep: frozenset[str] = frozenset()
    wake: bool = False

    @property
    def closed(self) -> bool:
        return self.unload_when_done or self.abandoned


class Scheduler:
    """See the module docstring. Every `on_*` method returns the effects to carry out, in order."""

    def __init__(
        self,
        models: Mapping[str, ModelRules],
        policy: EvictionPolicy,
        settings: SchedulerSettings | None = None,
        load_times: Mapping[str, LoadTime] | None = None,
        residency: Residency | None = None,
    ) -> None:
        self._rules = dict(models)
        self._residency = residency or Residency({})
        self._policy = policy
        self._settings = settings or SchedulerSettings()
        self._load_times = LoadTimes(self._settings.load_time_weight, load_times)
        self._arrivals = Arrivals(patience=self._settings.patience)
        self._wake_times = LoadTimes(self._settings.load_time_weight)
        # How long a lease lasts (grant → served), learned like load times: the drain of a
        # model in use, and the batch a fresh model serves, when counting deadlines ahead.
        self._serve_times = LoadTimes(self._settings.load_time_weight)
        self._granted_at: dict[int, float] = {}
        self._line: list[Line] = []
        self._due: dict[str, float] = {}
        self._phase: dict[str, Phase] = dict.fromkeys(self._rules, Phase.STOPPED)
        self._leases: dict[int, str] = {}
        self._lease_count: dict[str, int] = dict.fromkeys(self._rules, 0)
        self._reserved: dict[str, int] = dict.fromkeys(self._rules, 0)
        self._idle_since: dict[str, float] = {}
        # Ollama's `keep_alive`: an idle ttl for a model's current load, replacing its rule's.
        self._keep_alive: dict[str, float] = {}
        self._ready_at: dict[str, float] = {}
        self._failures: dict[str, int] = dict.fromkeys(self._rules, 0)
        self._backoff: dict[str, BackoffState] = {}
        self._queue: list[Waiting] = []
        self._swaps: dict[int, _Swap] = {}
        self._swap_of_waiter: dict[int, int] = {}
        self._model_of: dict[int, str] = {}
        self._seq = itertools.count()
        self._swap_ids = itertools.count(1)
        self._closed = False
        self._now = 0.0

    # ---- read-only views -------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._settings.policy

    def phase(self, model: str) -> Phase:
        return self._phase[model]

    def lease_count(self, model: str) -> int:
        return self._lease_count.get(model, 0)

    def queue_depth(self) -> int:
        depth = len(self._queue)
        if self._swaps:  # read after every event: no generator when no swap is planned
            depth += sum(len(s.waiters) for s in self._swaps.values())
        return depth

    def idle_since(self, model: str) -> float | None:
        """When `model`'s last lease ended (or it became ready), while it is running."""
        return self._idle_since.get(model)

    def ttl(self, model: str) -> float:
        """Idle seconds before `model` is stopped (0 = never): a `keep_alive` given for its
        current load, else its rule's ttl."""
        return self._keep_alive.get(model, self._rules[model].ttl)

    def waiting_for(self, model: str) -> int:
        """Requests for `model` not yet granted (queued, or waiting on its swap)."""
        # Every admitted request is reserved until it is served: waiting = reserved - leased.
        return self._reserved[model] - self._lease_count[model]

    def load_time(self, model: str) -> LoadTime | None:
        """The learned start→ready time of `model`, if it was ever loaded."""
        return self._load_times.get(model)

    def load_times(self) -> dict[str, LoadTime]:
        return self._load_times.snapshot()

    def backoff(self, model: str, now: float) -> BackoffState | None:
        """The model's crash-loop backoff, while it lasts."""
        state = self._backoff.get(model)
        return state if state is not None and now < state.until else None

    def start_failures(self, model: str) -> int:
        """Failed starts of `model` in a row (0 after a successful start)."""
        return self._failures[model]

    def leased_models(self) -> frozenset[str]:
        return frozenset(m for m, n in self._lease_count.items() if n)

    def leases_on(self, model: str) -> list[int]:
        """Request ids holding a lease on `model`."""
        return [rid for rid, m in self._leases.items() if m == model]

    def devices_of(self, model: str) -> tuple[str, ...] | None:
        """The devices placement put `model` on (None: not placed by memory). Read it when
        carrying out a StartSwap of `model`."""
        if not self._residency.places(model):
            return None
        return self._residency.devices(model)

    def usage_of(self, model: str) -> dict[str, int] | None:
        """Bytes per device `model` is counted for by placement (None: not placed)."""
        if not self._residency.places(model):
            return None
        return self._residency.usage(model)

    def capacity(self) -> dict[str, int]:
        """Bytes per device that placement places models on (empty: placement is off)."""
        return self._residency.capacity

    def active_swaps(self) -> list[StartSwap]:
        return [self._effect(s) for s in self._swaps.values()]

    @staticmethod
    def _effect(swap: _Swap) -> StartSwap:
        return StartSwap(swap.swap_id, swap.target, swap.evict, swap.sleep, swap.wake)

    def next_deadline(self) -> float | None:
        """The earliest future time at which `on_tick` may change something: a ttl expiry, or
        (under `batch`) a waiting model becoming due (`swap.deadlines`) or a fresh model's
        `min_resident` ending while others wait."""
        deadlines = [
            self._idle_since[m] + self.ttl(m)
            for m in self._ttl_candidates()
            if m in self._idle_since
        ]
        if self._settings.policy is Policy.BATCH and self._queue:
            line = line_of(self._oldest_waiting(), self._max_waits())
            start = self._line_start(self._now)
            later = [t for t in due_at(line, start, self._now, self._timing()) if t > self._now]
            later += [
                ready + self._settings.min_resident
                for ready in self._ready_at.values()
                if ready + self._settings.min_resident > self._now
            ]
            # A running model stops being expected to get more requests: others may go.
            hold = self._stream_hold(min(self._rules[w.model].max_wait for w in self._queue))
            later += [
                until
                for m in self._running()
                if (until := self._arrivals.expected_until(m, self._comeback_time(m), hold))
                is not None
                and until > self._now
            ]
            deadlines.append(min(later, default=float("inf")))
        deadline = min(deadlines, default=None)
        return None if deadline == float("inf") else deadline

    # ---- taking over from a previous config (reload) ----------------------------------------

    def adopt_ready(
        self,
        model: str,
        lease_ids: Collection[int],
        now: float,
        placement: tuple[tuple[str, ...], Mapping[str, int]] | None = None,
    ) -> None:
        """`model`'s process, started under the previous config, keeps running: it is READY
        here, with the leases its in-flight requests still hold (`lease_ids`, fresh ids of
        this scheduler; release each with `on_served`), on the (devices, usage) `placement`
        it had. Call before the first request."""
        if placement is not None and self._residency.need(model) is not None:
            self._residency.adopt(model, *placement)
        self._phase[model] = Phase.READY
        self._idle_since[model] = now
        self._ready_at[model] = now
        for request_id in lease_ids:
            self._leases[request_id] = model
            self._lease_count[model] += 1
            self._model_of[request_id] = model
            self._reserved[model] += 1

    def adopt_asleep(
        self, model: str, idle_since: float, placement: tuple[tuple[str, ...], Mapping[str, int]]
    ) -> None:
        """`model`'s process, put to sleep under the previous config, sleeps on here: ASLEEP,
        counted on the devices it sleeps on (`placement`, where a wake puts it back), its ttl
        running from `idle_since`. Call before the first request; only for a model this
        config lets sleep (`can_sleep`)."""
        self._residency.adopt(model, *placement)
        self._phase[model] = Phase.ASLEEP
        self._idle_since[model] = idle_since

    def can_sleep(self, model: str) -> bool:
        """True when eviction may put `model` to sleep (placed by memory, with a sleep tier)."""
        return self._residency.can_sleep(model)

    def adopt_stopping(self, model: str) -> None:
        """The previous config's process of `model` is still running and is being stopped (its
        config changed): STOPPING until `on_stopped`, so requests wait and nothing collides
        with it. Call before the first request."""
        self._phase[model] = Phase.STOPPING

    # ---- events ----------------------------------------------------------------------------

    def on_devices(self, capacity: Mapping[str, int], now: float) -> list[Effect]:
        """The devices became known (detected at start): bytes per device name."""
        self._now = now
        self._residency.set_capacity(capacity)
        return self._drain(now)

    def on_measured(self, model: str, measured: Mapping[str, int]) -> dict[str, int] | None:
        """What `model`'s processes hold per device, read once it was ready. Placement counts
        max(placed, measured) from now on; returns that usage (None: not placed)."""
        if not self._residency.places(model):
            return None
        return self._residency.measured(model, measured)

    def on_request(self, request_id: int, model: str, now: float) -> list[Effect]:
        """A request for `model` (a real model id) arrived."""
        self._now = now
        rejected = self._admission(request_id, model, now)
        if rejected is not None:
            return [rejected]
        self._reserved[model] += 1
        self._model_of[request_id] = model
        self._arrivals.observe(model, now)
        waiting = Waiting(request_id, model, self._rules[model].priority, next(self._seq), now)
        if self._queue or self._swaps or self._phase[model] is not Phase.READY:
            self._queue.append(waiting)
            effects = self._drain(now)
        else:
            # The common case under load: a request for a loaded model while nothing waits
            # and nothing is planned. `_drain` would place it alone (an empty line: a loaded
            # model is never in it), so it is placed here without rebuilding the line.
            self._line, self._due = [], {}
            effects = []
            if not self._place(waiting, now, effects):
                self._queue.append(waiting)
            self._launch_drained(effects)
        position = self._position(request_id)
        if position:  # 0: granted, rejected, or waiting on a swap (not behind other requests)
            effects.append(QueuePosition(request_id, position))
        return effects

    def on_swap_done(
        self,
        swap_id: int,
        error: str | None,
        now: float,
        load_time: float | None = None,
        slept: Collection[str] | None = None,
    ) -> list[Effect]:
        """A launched swap finished: evicted models are stopped (those in `slept` are asleep;
        default: every one it asked to sleep); the target is ready or failed. `load_time`: how
        long the target took from start (or wake) to ready."""
        self._now = now
        swap = self._swaps.pop(swap_id, None)
        if swap is None:
            return []
        effects: list[Effect] = []
        asleep = swap.sleep if slept is None else frozenset(slept) & swap.sleep
        for model in swap.evict:
            self._phase[model] = Phase.ASLEEP if model in asleep else Phase.STOPPED
            self._ready_at.pop(model, None)
        target = swap.target
        if error is None:
            if swap.wake and load_time is not None:
                self._wake_times.observe(target, load_time)
                load_time = None  # a wake says nothing of how long a start takes
            self._started(target, now, load_time, fresh=not swap.refresh)
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                if self._lease_count[target] < self._rules[target].concurrency_limit:
                    effects.append(self._grant(waiting.request_id, target))
                else:
                    self._queue.append(waiting)  # over the in-flight limit: wait for a slot
            if swap.unload_when_done or swap.abandoned:
                effects.extend(self._stop_now([target], StopReason.UNLOAD))
        else:
            self._phase[target] = Phase.STOPPED
            self._ready_at.pop(target, None)
            if not swap.closed:
                self._failed(target, error, now)
            message = f"failed to start model {target}: {error}"
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                effects.append(self._reject(waiting.request_id, 500, message))
        effects.extend(self._drain(now))
        return effects

    def on_served(self, request_id: int, now: float) -> list[Effect]:
        """A granted request finished (last byte sent, or the client left)."""
        self._now = now
        model = self._leases.pop(request_id, None)
        if model is None:
            return []
        granted = self._granted_at.pop(request_id, now)
        self._serve_times.observe(model, now - granted)
        self._lease_count[model] -= 1
        self._release(request_id)
        if self._lease_count[model] == 0:
            self._idle_since[model] = now
        return self._drain(now)

    def on_cancel(self, request_id: int, now: float) -> list[Effect]:
        """The client left. Frees its place wherever it is; a granted one counts as served."""
        self._now = now
        if request_id in self._leases:
            return self.on_served(request_id, now)
        swap_id = self._swap_of_waiter.pop(request_id, None)
        if swap_id is not None:
            swap = self._swaps[swap_id]
            swap.waiters = [w for w in swap.waiters if w.request_id != request_id]
            self._release(request_id)
            effects: list[Effect] = []
            if (
                self._settings.cancel_abandoned_loads
                and swap.launched
                and not swap.waiters
                and not swap.refresh
                and not swap.closed
            ):
                swap.abandoned = True
                effects.append(CancelStart(swap.swap_id, swap.target))
            return effects + self._drain(now)
        for i, waiting in enumerate(self._queue):
            if waiting.request_id == request_id:
                del self._queue[i]
                self._release(request_id)
                return self._drain(now)
        return []

    def on_stopped(self, model: str, now: float) -> list[Effect]:
        """A StopModels stop of `model` finished."""
        self._now = now
        if self._phase.get(model) is Phase.STOPPING and not self._is_evicted_by_launched(model):
            self._phase[model] = Phase.STOPPED
            self._ready_at.pop(model, None)
        return self._drain(now)

    def on_exited(self, model: str, now: float) -> list[Effect]:
        """A ready (or sleeping) model's process exited on its own (a crash). It will be
        started on demand."""
        self._now = now
        if self._phase.get(model) in (Phase.READY, Phase.ASLEEP):
            self._phase[model] = Phase.STOPPED
            self._ready_at.pop(model, None)
        return self._drain(now)

    def on_keep_alive(self, model: str, ttl: float) -> None:
        """Keep the ready `model` `ttl` idle seconds (0 = forever) before stopping it, until
        it stops (a later load has its rule's ttl again). Ignored unless it is ready."""
        if self._phase[model] is Phase.READY:
            self._keep_alive[model] = ttl

    def on_unload(self, models: Collection[str] | None, now: float) -> list[Effect]:
        """An operator unloads `models` (None = all). Waiters for them are told; leases are not
        waited for (the operator asked for it)."""
        self._now = now
        targets = set(self._rules) if models is None else set(models) & set(self._rules)
        effects: list[Effect] = []
        for waiting in [w for w in self._queue if w.model in targets]:
            self._queue.remove(waiting)
            effects.append(self._reject(waiting.request_id, 500, f"model {waiting.model} unloaded"))
        for swap in list(self._swaps.values()):
            if swap.target not in targets:
                continue
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                effects.append(
                    self._reject(waiting.request_id, 500, f"model {swap.target} unloaded")
                )
            swap.waiters = []
            if swap.launched:
                swap.unload_when_done = True
            else:
                del self._swaps[swap.swap_id]
        effects.extend(
            self._stop_now(
                sorted(m for m in targets if self._phase[m] in (Phase.READY, Phase.ASLEEP)),
                StopReason.UNLOAD,
            )
        )
        effects.extend(self._drain(now))
        return effects

    def on_tick(self, now: float) -> list[Effect]:
        """Time passed: stop ready models idle for longer than their ttl; requests that became
        overdue (or models whose `min_resident` ended) are placed again."""
        self._now = now
        expired = [
            m for m in self._ttl_candidates() if now - self._idle_since.get(m, now) >= self.ttl(m)
        ]
        return self._stop_now(sorted(expired), StopReason.TTL) + self._drain(now)

    def on_shutdown(self) -> list[Effect]:
        """Refuse new work and tell every waiter. Stopping processes is the caller's job."""
        self._closed = True
        effects: list[Effect] = []
        for waiting in self._queue:
            effects.append(self._reject(waiting.request_id, 503, "llamaswap is shutting down"))
        self._queue.clear()
        for swap in self._swaps.values():
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                effects.append(self._reject(waiting.request_id, 503, "llamaswap is shutting down"))
            swap.waiters = []
        return effects

    # ---- internals -------------------------------------------------------------------------

    def _admission(self, request_id: int, model: str, now: float) -> Reject | None:
        if self._closed:
            return Reject(request_id, 503, "llamaswap is shutting down")
        rules = self._rules.get(model)
        if rules is None:
            return Reject(request_id, 404, "no local server found for requested model")
        backoff = self.backoff(model, now)
        if backoff is not None:
            return Reject(request_id, 503, self._backoff_message(model, backoff, now))
        if rules.admission is Admission.LIMIT:
            if self._reserved[model] >= rules.concurrency_limit:
                return Reject(request_id, 429, "Too many requests", "concurrency_limit", 1.0)
        elif self.waiting_for(model) >= rules.max_queue:
            retry = max(1.0, self._load_seconds(model))
            message = (
                f"Too many requests: {rules.max_queue} requests already wait for model {model}"
            )
            return Reject(request_id, 429, message, "queue_full", retry)
        return None

    @staticmethod
    def _backoff_message(model: str, backoff: BackoffState, now: float) -> str:
        return (
            f"model {model} failed to start {backoff.failures} times in a row; "
            f"next attempt in {max(0.0, backoff.until - now):.0f}s. "
            f"Last error: {backoff.last_error}"
        )

    def _started(self, model: str, now: float, load_time: float | None, *, fresh: bool) -> None:
        self._phase[model] = Phase.READY
        self._idle_since[model] = now
        if fresh or model not in self._ready_at:
            self._ready_at[model] = now
            self._keep_alive.pop(model, None)  # a new load: the rule's ttl again
        self._failures[model] = 0
        self._backoff.pop(model, None)
        if load_time is not None:
            self._load_times.observe(model, load_time)

    def _failed(self, model: str, error: str, now: float) -> None:
        self._failures[model] += 1
        delay = self._settings.backoff.delay(self._failures[model])
        if delay > 0:
            self._backoff[model] = BackoffState(self._failures[model], now + delay, error)

    def _drain(self, now: float) -> list[Effect]:
        if not self._queue and not self._swaps:
            # Nothing waits and nothing is planned (a lease ended with no one queued).
            self._line, self._due = [], {}
            return []
        effects: list[Effect] = []
        self._requeue_unlaunched()
        if self._settings.policy is Policy.BATCH:
            oldest = self._oldest_waiting()
            # Nobody waits for a swap (the common case under load: requests for loaded
            # models): the line is empty and nothing is due, without the timing work.
            self._line = line_of(oldest, self._max_waits()) if oldest else []
            self._due = due(self._line, self._line_start(now), self._timing()) if oldest else {}
        for waiting in self._ordered(now):
            if self._place(waiting, now, effects):
                self._queue.remove(waiting)
        self._launch_drained(effects)
        return effects

    def _launch_drained(self, effects: list[Effect]) -> None:
        """Launch each planned swap whose evicted models have no lease left."""
        for swap in self._swaps.values():
            if not swap.launched and all(self._lease_count[m] == 0 for m in swap.evict):
                swap.launched = True
                for model in swap.evict:
                    self._phase[model] = Phase.STOPPING
                if not swap.refresh:
                    self._phase[swap.target] = Phase.STARTING
                effects.append(self._effect(swap))

    def _ordered(self, now: float) -> list[Waiting]:
        if len(self._queue) < 2:
            return list(self._queue)  # nothing to rank
        if self._settings.policy is Policy.FIFO:
            return fifo_order(self._queue)
        return batch_order(
            self._queue,
            due=self._due,
            ready=frozenset(m for m, p in self._phase.items() if p is Phase.READY),
            load_time=self._load_seconds,
        )

    def _max_waits(self) -> dict[str, float]:
        return {m: r.max_wait for m, r in self._rules.items()}

    def _oldest_waiting(self) -> dict[str, float]:
        """The oldest queued arrival of each model that needs a swap to be served."""
        oldest: dict[str, float] = {}
        for w in self._queue:
            if self._phase[w.model] in (Phase.READY, Phase.STARTING):
                continue
            if w.model not in oldest or w.arrived < oldest[w.model]:
                oldest[w.model] = w.arrived
        return oldest

    def _load_seconds(self, model: str) -> float:
        """The learned load time of `model`, or the settings' guess before its first load."""
        return self._load_times.seconds(model, self._settings.default_load_time)

    def _serve_time(self, model: str) -> float:
        return self._serve_times.seconds(model, 0.0)

    def _timing(self) -> Timing:
        return Timing(
            load=self._load_seconds,
            serve=self._serve_time,
            min_resident=self._settings.min_resident,
            stop=self._settings.stop_time,
        )

    def _grant_breaks_line(self, model: str, now: float) -> bool:
        """Batch: one more lease on a loaded `model` would push a waiting model's load past
        its deadline (the lease must end before the swap can begin). A fresh model in its
        `min_resident` keeps granting."""
        if self._settings.policy is not Policy.BATCH or not self._line:
            return False
        if now - self._ready_at.get(model, now) < self._settings.min_resident:
            return False
        start = self._line_start(now)
        start = max(start, now + self._serve_time(model) + self._settings.stop_time)
        return bool(due(self._line, start, self._timing()))

    def _line_start(self, now: float) -> float:
        """When the next swap could begin: once the requests in flight are expected to have
        finished (by each model's learned lease time), and the evicted stopped."""
        drained = now
        for rid, model in self._leases.items():
            granted = self._granted_at.get(rid, now)
            drained = max(drained, granted + self._serve_time(model))
        return drained + self._settings.stop_time

    def _requeue_unlaunched(self) -> None:
        """A swap still draining leases is a plan, not a commitment: its waiters go back to the
        queue and are placed again in queue order. So a later, higher-priority request can go
        first, and a swap whose waiters all left (cancel, shutdown) is never launched."""
        for swap in [s for s in self._swaps.values() if not s.launched]:
            del self._swaps[swap.swap_id]
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                self._queue.append(waiting)
        if len(self._queue) > 1:
            self._queue[:] = fifo_order(self._queue)

    def _place(self, waiting: Waiting, now: float, effects: list[Effect]) -> bool:
        """Steps 1–5 of the module docstring. True when the request left the queue."""
        model = waiting.model
        phase = self._phase[model]
        if phase is Phase.STOPPING:
            return False
        swap = self._swap_targeting(model)
        if swap is not None:
            if swap.closed:
                return False  # it is stopped once started: wait, then start it afresh
            swap.waiters.append(waiting)
            self._swap_of_waiter[waiting.request_id] = swap.swap_id
            return True
        if phase is Phase.READY:
            if any(model in s.evict for s in self._swaps.values()):
                return False
            if self._lease_count[model] >= self._rules[model].concurrency_limit:
                return False
            decided = self._evictions(model, now)
            if isinstance(decided, Refused):  # cannot happen for a resident model
                effects.append(self._reject(waiting.request_id, 503, decided.message))
                return True
            evict, placed = decided
            if not evict:
                if self._grant_breaks_line(model, now):
                    return False
                effects.append(self._grant(waiting.request_id, model))
                return True
            return self._plan(waiting, evict, now, refresh=True, placed=placed)
        backoff = self.backoff(model, now)
        if backoff is not None:
            message = self._backoff_message(model, backoff, now)
            effects.append(self._reject(waiting.request_id, 503, message))
            return True
        decided = self._evictions(model, now)
        if isinstance(decided, Refused):
            effects.append(self._reject(waiting.request_id, 503, decided.message))
            return True
        evict, placed = decided
        return self._plan(waiting, evict, now, refresh=False, placed=placed)

    def _evictions(self, model: str, now: float) -> tuple[frozenset[str], Placed | None] | Refused:
        """Which running models must go for `model` (and where placement puts it)."""
        running = self._running() - {model}
        if not self._residency.places(model):
            return self._policy.evictions(model, running), None
        placed_here = frozenset(m for m in running if self._residency.places(m))
        others = self._policy.evictions(model, running - placed_here)
        if self._phase[model] is Phase.READY:  # resident where it is: the fast path
            return others, None
        busy = {m for m, n in self._lease_count.items() if n}
        busy.update(s.target for s in self._swaps.values())
        busy.update(m for m, p in self._phase.items() if p is Phase.STARTING)
        asleep = [m for m, p in self._phase.items() if p is Phase.ASLEEP]

        def stop_cost(m: str) -> float:
            load = self._load_seconds(m)
            return eviction_cost(load, now - self._idle_since.get(m, now))

        def cost(m: str) -> float:  # of making room: a model that can sleep comes back fast
            if not self._residency.can_sleep(m):
                return stop_cost(m)
            wake = self._wake_times.seconds(m, DEFAULT_WAKE_TIME_S)
            return eviction_cost(wake, now - self._idle_since.get(m, now))

        decision = self._residency.decide(model, placed_here, busy, cost, asleep, stop_cost)
        if isinstance(decision, Refused):
            return decision
        assert decision is not None  # places(model) holds
        # Models not placed by memory hold unknown memory: the group policy decides for them.
        return decision.evict | decision.stop_asleep | others, decision

    def _plan(
        self,
        waiting: Waiting,
        evict: frozenset[str],
        now: float,
        *,
        refresh: bool,
        placed: Placed | None = None,
    ) -> bool:
        """Plan a swap to `waiting.model` evicting `evict`, unless that collides or (batch)
        evicts a model still in use. True when the request joined the new swap."""
        if self._collides(waiting.model, evict):
            return False
        if self._settings.policy is Policy.BATCH and not self._may_evict(evict, waiting, now):
            return False
        swap = _Swap(
            next(self._swap_ids),
            waiting.model,
            evict,
            [waiting],
            refresh=refresh,
            placed=placed,
            sleep=placed.sleep if placed is not None else frozenset(),
            wake=self._phase[waiting.model] is Phase.ASLEEP,
        )
        if placed is not None:
            # Counted where it goes from now on, so later plans in this pass see it there.
            self._residency.assign(waiting.model, placed)
        self._swaps[swap.swap_id] = swap
        self._swap_of_waiter[waiting.request_id] = swap.swap_id
        return True

    def _comeback_time(self, model: str) -> float:
        """What bringing `model` back after a swap costs: its wake when it can sleep, else
        its load."""
        if self._residency.can_sleep(model):
            return self._wake_times.seconds(model, DEFAULT_WAKE_TIME_S)
        return self._load_seconds(model)

    def _stream_hold(self, max_wait: float) -> float:
        """How long after its last request a streaming model is kept for a request with this
        `max_wait`: a fraction of it, and finite when `max_wait` is not (a hold without end
        would starve the other models while the stream lasts)."""
        return self._settings.stream_hold * min(max_wait, MAX_HOLD_BASIS_S)

    def _may_evict(self, evict: frozenset[str], waiting: Waiting, now: float) -> bool:
        """Batch: a model in use keeps running while requests wait for it or keep arriving
        for it (`swap.arrivals`), unless the request's model is due (`swap.deadlines`); and
        for `min_resident` after it became ready even then, so two due models cannot thrash
        each other's loads."""
        overdue = waiting.model in self._due
        for model in evict:
            waiting_here = self.waiting_for(model)
            in_use = waiting_here or self._lease_count[model]
            if in_use and now - self._ready_at.get(model, now) < self._settings.min_resident:
                return False
            if overdue:
                continue
            hold = self._stream_hold(self._rules[waiting.model].max_wait)
            if waiting_here or self._arrivals.expects_more(
                model, now, self._comeback_time(model), hold
            ):
                return False
        return True

    def _running(self) -> frozenset[str]:
        """Models that occupy resources now or soon: not stopped, or targeted by a swap."""
        busy = {m for m, p in self._phase.items() if p not in (Phase.STOPPED, Phase.ASLEEP)}
        busy.update(s.target for s in self._swaps.values())
        return frozenset(busy)

    def _collides(self, target: str, evict: frozenset[str]) -> bool:
        for swap in self._swaps.values():
            if swap.target in evict or target in swap.evict or evict & swap.evict:
                return True
        return any(self._phase[m] is Phase.STOPPING for m in evict)

    def _swap_targeting(self, model: str) -> _Swap | None:
        for swap in self._swaps.values():
            if swap.target == model:
                return swap
        return None

    def _is_evicted_by_launched(self, model: str) -> bool:
        return any(s.launched and model in s.evict for s in self._swaps.values())

    def _ttl_candidates(self) -> list[str]:
        return [
            m
            for m in self._rules
            if self.ttl(m) > 0
            and self._phase[m] in (Phase.READY, Phase.ASLEEP)  # asleep: the ttl runs on
            and self._lease_count[m] == 0
            and not any(m in s.evict or m == s.target for s in self._swaps.values())
        ]

    def _stop_now(self, models: list[str], reason: StopReason) -> list[Effect]:
        if not models:
            return []
        for model in models:
            self._phase[model] = Phase.STOPPING
            self._ready_at.pop(model, None)
        return [StopModels(frozenset(models), reason)]

    def _grant(self, request_id: int, model: str) -> Grant:
        self._leases[request_id] = model
        self._granted_at[request_id] = self._now
        self._lease_count[model] += 1
        return Grant(request_id, model)

    def _reject(self, request_id: int, status: int, message: str) -> Reject:
        self._release(request_id)
        return Reject(request_id, status, message)

    def _release(self, request_id: int) -> None:
        model = self._model_of.pop(request_id, None)
        if model is not None:
            self._reserved[model] -= 1

    def _position(self, request_id: int) -> int:
        for index, waiting in enumerate(self._queue):
            if waiting.request_id == request_id:
                return index + 1
        return 0
