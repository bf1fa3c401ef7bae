"""The sans-IO scheduler: who runs, who waits, who is evicted. Pure and synchronous.

The caller feeds it facts (a request arrived, a swap finished, a lease was released, a stop
finished, time passed) and carries out the effects it returns. Because granting a request and
registering its lease happen in the same call, no swap can slip between "the model is ready"
and "the request is forwarded": a model holding a lease is never stopped by a swap.

Per model the scheduler tracks a phase: STOPPED, STARTING (the target of a launched swap),
READY, STOPPING (evicted by a launched swap, or stopped for TTL/unload).

Decision tree for each queued request, re-run in queue order (priority desc, then arrival)
whenever anything changes:
  1. Its model is STOPPING → keep waiting (it is started again once the stop finishes).
  2. A swap targeting its model exists → join that swap's waiters (collation: one start).
  3. Its model is READY and no swap is waiting to evict it → grant (lease) now.
  4. Its model is READY but a pending swap will evict it → keep waiting (no starvation of the
     swap by a stream of new requests).
  5. Its model is STOPPED: ask the policy which running models must go. If that collides with
     a swap in progress (our evictions include its target or overlap its evictions, or a model
     to evict is already stopping) → keep waiting. Otherwise create a swap. A swap launches
     (StartSwap effect) only once no model it evicts holds a lease; until then it drains,
     and its waiters return to the queue before every re-run (so priority order holds and
     a swap nobody waits for any more is dropped). A launched swap always completes.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from llamaswap.swap.effects import (
    Effect,
    Grant,
    QueuePosition,
    Reject,
    StartSwap,
    StopModels,
    StopReason,
)
from llamaswap.swap.policy import EvictionPolicy


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(frozen=True)
class ModelRules:
    """Per-model scheduling settings taken from the config."""

    priority: int = 0
    concurrency_limit: int = 10
    ttl: float = 0.0


@dataclass
class _Waiting:
    request_id: int
    model: str
    priority: int
    seq: int


@dataclass
class _Swap:
    swap_id: int
    target: str
    evict: frozenset[str]
    waiters: list[_Waiting] = field(default_factory=list)
    launched: bool = False
    unload_when_done: bool = False


class Scheduler:
    """See the module docstring. Every `on_*` method returns the effects to carry out, in order."""

    def __init__(self, models: Mapping[str, ModelRules], policy: EvictionPolicy) -> None:
        self._rules = dict(models)
        self._policy = policy
        self._phase: dict[str, Phase] = dict.fromkeys(self._rules, Phase.STOPPED)
        self._leases: dict[int, str] = {}
        self._lease_count: dict[str, int] = dict.fromkeys(self._rules, 0)
        self._reserved: dict[str, int] = dict.fromkeys(self._rules, 0)
        self._idle_since: dict[str, float] = {}
        self._queue: list[_Waiting] = []
        self._swaps: dict[int, _Swap] = {}
        self._swap_of_waiter: dict[int, int] = {}
        self._model_of: dict[int, str] = {}
        self._seq = itertools.count()
        self._swap_ids = itertools.count(1)
        self._closed = False

    # ---- read-only views -------------------------------------------------------------------

    def phase(self, model: str) -> Phase:
        return self._phase[model]

    def lease_count(self, model: str) -> int:
        return self._lease_count[model]

    def queue_depth(self) -> int:
        return len(self._queue) + sum(len(s.waiters) for s in self._swaps.values())

    def leased_models(self) -> frozenset[str]:
        return frozenset(m for m, n in self._lease_count.items() if n)

    def leases_on(self, model: str) -> list[int]:
        """Request ids holding a lease on `model`."""
        return [rid for rid, m in self._leases.items() if m == model]

    def active_swaps(self) -> list[StartSwap]:
        return [StartSwap(s.swap_id, s.target, s.evict) for s in self._swaps.values()]

    def next_deadline(self) -> float | None:
        """The earliest time at which `on_tick` could stop an idle model, if any."""
        deadlines = [
            self._idle_since[m] + self._rules[m].ttl
            for m in self._ttl_candidates()
            if m in self._idle_since
        ]
        return min(deadlines, default=None)

    # ---- taking over from a previous config (reload) ----------------------------------------

    def adopt_ready(self, model: str, lease_ids: Collection[int], now: float) -> None:
        """`model`'s process, started under the previous config, keeps running: it is READY
        here, with the leases its in-flight requests still hold (`lease_ids`, fresh ids of
        this scheduler; release each with `on_served`). Call before the first request."""
        self._phase[model] = Phase.READY
        self._idle_since[model] = now
        for request_id in lease_ids:
            self._leases[request_id] = model
            self._lease_count[model] += 1
            self._model_of[request_id] = model
            self._reserved[model] += 1

    def adopt_stopping(self, model: str) -> None:
        """The previous config's process of `model` is still running and is being stopped (its
        config changed): STOPPING until `on_stopped`, so requests wait and nothing collides
        with it. Call before the first request."""
        self._phase[model] = Phase.STOPPING

    # ---- events ----------------------------------------------------------------------------

    def on_request(self, request_id: int, model: str, now: float) -> list[Effect]:
        """A request for `model` (a real model id) arrived."""
        if self._closed:
            return [Reject(request_id, 503, "llamaswap is shutting down")]
        if model not in self._rules:
            return [Reject(request_id, 404, "no local server found for requested model")]
        if self._reserved[model] >= self._rules[model].concurrency_limit:
            return [Reject(request_id, 429, "Too many requests", "concurrency_limit")]
        self._reserved[model] += 1
        self._model_of[request_id] = model
        self._queue.append(
            _Waiting(request_id, model, self._rules[model].priority, next(self._seq))
        )
        effects = self._drain(now)
        position = self._position(request_id)
        if position:  # 0: granted, rejected, or waiting on a swap (not behind other requests)
            effects.append(QueuePosition(request_id, position))
        return effects

    def on_swap_done(self, swap_id: int, error: str | None, now: float) -> list[Effect]:
        """A launched swap finished: evicted models are stopped; the target is ready or failed."""
        swap = self._swaps.pop(swap_id, None)
        if swap is None:
            return []
        effects: list[Effect] = []
        for model in swap.evict:
            self._phase[model] = Phase.STOPPED
        if error is None:
            self._phase[swap.target] = Phase.READY
            self._idle_since[swap.target] = now
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                effects.append(self._grant(waiting.request_id, swap.target))
            if swap.unload_when_done:
                effects.extend(self._stop_now([swap.target], StopReason.UNLOAD))
        else:
            self._phase[swap.target] = Phase.STOPPED
            message = f"failed to start model {swap.target}: {error}"
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                effects.append(self._reject(waiting.request_id, 500, message))
        effects.extend(self._drain(now))
        return effects

    def on_served(self, request_id: int, now: float) -> list[Effect]:
        """A granted request finished (last byte sent, or the client left)."""
        model = self._leases.pop(request_id, None)
        if model is None:
            return []
        self._lease_count[model] -= 1
        self._release(request_id)
        if self._lease_count[model] == 0:
            self._idle_since[model] = now
        return self._drain(now)

    def on_cancel(self, request_id: int, now: float) -> list[Effect]:
        """The client left. Frees its place wherever it is; a granted one counts as served."""
        if request_id in self._leases:
            return self.on_served(request_id, now)
        swap_id = self._swap_of_waiter.pop(request_id, None)
        if swap_id is not None:
            swap = self._swaps[swap_id]
            swap.waiters = [w for w in swap.waiters if w.request_id != request_id]
            self._release(request_id)
            return self._drain(now)
        for i, waiting in enumerate(self._queue):
            if waiting.request_id == request_id:
                del self._queue[i]
                self._release(request_id)
                return self._drain(now)
        return []

    def on_stopped(self, model: str, now: float) -> list[Effect]:
        """A StopModels stop of `model` finished."""
        if self._phase.get(model) is Phase.STOPPING and not self._is_evicted_by_launched(model):
            self._phase[model] = Phase.STOPPED
        return self._drain(now)

    def on_exited(self, model: str, now: float) -> list[Effect]:
        """A ready model's process exited on its own (a crash). It will be started on demand."""
        if self._phase.get(model) is Phase.READY:
            self._phase[model] = Phase.STOPPED
        return self._drain(now)

    def on_unload(self, models: Collection[str] | None, now: float) -> list[Effect]:
        """An operator unloads `models` (None = all). Waiters for them are told; leases are not
        waited for (the operator asked for it)."""
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
                sorted(m for m in targets if self._phase[m] is Phase.READY), StopReason.UNLOAD
            )
        )
        effects.extend(self._drain(now))
        return effects

    def on_tick(self, now: float) -> list[Effect]:
        """Time passed: stop ready models idle for longer than their ttl."""
        expired = [
            m
            for m in self._ttl_candidates()
            if now - self._idle_since.get(m, now) >= self._rules[m].ttl
        ]
        return self._stop_now(sorted(expired), StopReason.TTL)

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

    def _drain(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        self._requeue_unlaunched()
        for waiting in list(self._queue):
            if self._place(waiting, effects):
                self._queue.remove(waiting)
        for swap in self._swaps.values():
            if not swap.launched and all(self._lease_count[m] == 0 for m in swap.evict):
                swap.launched = True
                for model in swap.evict:
                    self._phase[model] = Phase.STOPPING
                self._phase[swap.target] = Phase.STARTING
                effects.append(StartSwap(swap.swap_id, swap.target, swap.evict))
        return effects

    def _requeue_unlaunched(self) -> None:
        """A swap still draining leases is a plan, not a commitment: its waiters go back to the
        queue and are placed again in queue order. So a later, higher-priority request can go
        first, and a swap whose waiters all left (cancel, shutdown) is never launched."""
        for swap in [s for s in self._swaps.values() if not s.launched]:
            del self._swaps[swap.swap_id]
            for waiting in swap.waiters:
                del self._swap_of_waiter[waiting.request_id]
                self._queue.append(waiting)
        # Higher priority first; equal priority keeps arrival order.
        self._queue.sort(key=lambda w: (-w.priority, w.seq))

    def _place(self, waiting: _Waiting, effects: list[Effect]) -> bool:
        """Steps 1–5 of the module docstring. True when the request left the queue."""
        model = waiting.model
        phase = self._phase[model]
        if phase is Phase.STOPPING:
            return False
        swap = self._swap_targeting(model)
        if swap is not None:
            if swap.unload_when_done:
                return False  # it is stopped once started: wait, then start it afresh
            swap.waiters.append(waiting)
            self._swap_of_waiter[waiting.request_id] = swap.swap_id
            return True
        if phase is Phase.READY:
            if any(model in s.evict for s in self._swaps.values()):
                return False
            effects.append(self._grant(waiting.request_id, model))
            return True
        evict = self._policy.evictions(model, self._running() - {model})
        if self._collides(model, evict):
            return False
        swap = _Swap(next(self._swap_ids), model, evict, [waiting])
        self._swaps[swap.swap_id] = swap
        self._swap_of_waiter[waiting.request_id] = swap.swap_id
        return True

    def _running(self) -> frozenset[str]:
        """Models that occupy resources now or soon: not stopped, or targeted by a swap."""
        busy = {m for m, p in self._phase.items() if p is not Phase.STOPPED}
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
            for m, rules in self._rules.items()
            if rules.ttl > 0
            and self._phase[m] is Phase.READY
            and self._lease_count[m] == 0
            and not any(m in s.evict for s in self._swaps.values())
        ]

    def _stop_now(self, models: list[str], reason: StopReason) -> list[Effect]:
        if not models:
            return []
        for model in models:
            self._phase[model] = Phase.STOPPING
        return [StopModels(frozenset(models), reason)]

    def _grant(self, request_id: int, model: str) -> Grant:
        self._leases[request_id] = model
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
        order = [w.request_id for w in self._queue]
        if request_id in order:
            return order.index(request_id) + 1
        return 0
