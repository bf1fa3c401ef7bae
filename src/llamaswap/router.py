"""The router: feeds the pure scheduler with facts and carries out its effects.

It owns one `UpstreamProcess` per model and every background task it starts (swaps, stops,
the TTL timer). The HTTP layer calls `acquire(model)` and gets a `Lease`; the lease is what
keeps the model from being stopped, and it is registered by the scheduler in the same step
that decides the request may go ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from llamaswap.config.model import Config, ModelConfig
from llamaswap.config.resources import DeviceConfig, device_index, model_resource_problems
from llamaswap.config.sizes import format_size
from llamaswap.errors import RequestError, TooManyRequests, UpstreamError
from llamaswap.observe import metrics
from llamaswap.observe.device_memory import ModelMemory, eviction_record
from llamaswap.observe.events import EventBus
from llamaswap.observe.gguf import estimate_from_cmd
from llamaswap.observe.gpu_usage import check_declared
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor import ProcessSpec, ProcessState, UpstreamProcess
from llamaswap.supervisor.devices import runtime_indices
from llamaswap.supervisor.gpus import detect_cards, host_memory_total, measure_tree
from llamaswap.supervisor.sleep import release_device, wake
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
from llamaswap.swap.load_times import LoadTime
from llamaswap.swap.memory import device_capacities, placed_needs, sleep_hosts
from llamaswap.swap.placement import Need
from llamaswap.swap.policy import EvictionPolicy, GroupPolicy, MatrixPolicy
from llamaswap.swap.residency import Residency, usage_on
from llamaswap.swap.rules import Admission, Backoff, ModelRules, Policy, SchedulerSettings
from llamaswap.swap.scheduler import BackoffState, Phase, Scheduler

log = logging.getLogger("llamaswap.router")

QueueListener = Callable[[int], None]

# After a reload, in-flight requests on a model whose process must go (its config changed,
# or it was removed) get this long to finish before the old process is stopped.
RETIRE_DRAIN_S = 30.0


@dataclass
class Lease:
    """Permission to forward one request to `model`. Release exactly once (idempotent)."""

    model: str
    upstream: str
    _release: Callable[[], None] = field(repr=False)
    # From the config that granted it: a reload may drop the model while the lease is held.
    connect_timeout: float | None = None
    header_timeout: float | None = None
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release()


def process_spec(model: ModelConfig, health_check_timeout: float) -> ProcessSpec:
    return ProcessSpec(
        model_id=model.id,
        cmd=model.cmd,
        cmd_stop=model.cmd_stop,
        proxy=model.proxy,
        check_endpoint=model.check_endpoint,
        env=tuple(model.env),
        health_check_timeout=float(health_check_timeout),
    )


def same_launch(a: ProcessSpec, b: ProcessSpec) -> bool:
    """Would a process started from `a` be the one `b` describes? (The health check timeout
    only matters while starting, so a change to it keeps a running process.)"""
    return replace(a, health_check_timeout=b.health_check_timeout, gpus=b.gpus) == b


def model_rules(config: Config) -> dict[str, ModelRules]:
    return {
        m.id: ModelRules(
            priority=config.fifo_priority(m.id),
            concurrency_limit=m.concurrency_limit,
            ttl=float(m.ttl),
            admission=Admission.LIMIT if m.limits_reservations else Admission.QUEUE,
            max_queue=m.max_queue,
            max_wait=float(m.max_wait if m.max_wait is not None else 0.0),
        )
        for m in config.models.values()
    }


def scheduler_settings(config: Config) -> SchedulerSettings:
    scheduler = config.routing.scheduler
    return SchedulerSettings(
        policy=Policy(scheduler.policy),
        min_resident=scheduler.min_resident,
        cancel_abandoned_loads=scheduler.cancel_abandoned_loads,
        backoff=Backoff(scheduler.backoff.after, scheduler.backoff.initial, scheduler.backoff.max),
    )


def gguf_estimate(model: ModelConfig) -> int | None:
    """Bytes a model needs, estimated from the GGUF file its `cmd` names (None: none)."""
    found = estimate_from_cmd(model.cmd) if ".gguf" in model.cmd else None
    if found is None:
        return None
    log.info(
        "%s: estimated %s from %s (weights %s, KV cache %s at context %d)",
        model.id,
        format_size(found.total),
        found.path,
        format_size(found.weights),
        format_size(found.kv_cache),
        found.ctx,
    )
    return found.total


def placement_needs(config: Config) -> dict[str, Need]:
    """The models placed by memory (`swap.memory.placed_needs`), GGUF files read now."""
    return placed_needs(config, gguf_estimate)


def eviction_policy(config: Config) -> EvictionPolicy:
    matrix = config.compiled_matrix()
    if matrix is not None:
        return MatrixPolicy(lambda target, running: matrix.solve(target, running).evict)
    return GroupPolicy(config.group_map())


class Router:
    """Carries out scheduler decisions for one config. Use as `async with Router(...)`."""

    def __init__(
        self,
        config: Config,
        *,
        events: EventBus,
        upstream_log: LogBuffer,
        clock: Callable[[], float] = time.monotonic,
        adopted: Mapping[str, UpstreamProcess] | None = None,
        log_buffers: Mapping[str, LogBuffer] | None = None,
        load_times: Mapping[str, LoadTime] | None = None,
        on_load_time: Callable[[str, LoadTime], None] | None = None,
    ) -> None:
        """`adopted`: running processes taken over from the previous config's router;
        `log_buffers`: its per-model logs, kept so that log followers see one stream;
        `load_times`: learned load times to start from; `on_load_time` is told each update."""
        self.config = config
        self.events = events  # the server's bus; it outlives this router across reloads
        self.upstream_log = upstream_log
        self._clock = clock
        self._on_load_time = on_load_time
        self._needs = placement_needs(config)
        self._device_names = {device_index(config.devices, n): n for n in config.devices}
        self._asleep_host = sleep_hosts(config, self._needs)
        # Not written: the machine's RAM is the budget of sleeping models.
        self.host_memory = (
            config.host_memory if config.host_memory is not None else host_memory_total()
        )
        self._measured: dict[str, tuple[int, dict[str, int]]] = {}  # model -> (pid, bytes)
        self._scheduler = Scheduler(
            model_rules(config),
            eviction_policy(config),
            scheduler_settings(config),
            load_times,
            Residency(
                self._needs,
                device_capacities(config.devices),
                self._asleep_host,
                self.host_memory,
            ),
        )
        self._ready_since: dict[str, float] = {}
        self.logs: dict[str, LogBuffer] = {}
        self.processes: dict[str, UpstreamProcess] = {}
        for model in config.models.values():
            spec = process_spec(model, config.health_check_timeout)
            process = (adopted or {}).get(model.id)
            if process is None:
                logs = (log_buffers or {}).get(model.id)
                if logs is None:
                    logs = LogBuffer(parents=(upstream_log,))
                process = UpstreamProcess(
                    spec,
                    logs=logs,
                    on_state_change=self._on_state_change,
                    on_unexpected_exit=self._on_unexpected_exit,
                )
            else:
                process.rebind(
                    replace(spec, gpus=process.spec.gpus),  # its child runs on those
                    on_state_change=self._on_state_change,
                    on_unexpected_exit=self._on_unexpected_exit,
                )
            self.logs[model.id] = process.logs
            self.processes[model.id] = process
        self._waiters: dict[int, asyncio.Future[Lease]] = {}
        self._queue_listeners: dict[int, QueueListener] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._ttl_task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_queue_depth = 0
        # Reload: the router taking over (set once `hand_over` begins), the leases of adopted
        # models (released into the successor's scheduler), and what this router still stops.
        self._successor: asyncio.Future[Router] | None = None
        self._handed_leases: dict[int, Callable[[], None]] = {}
        self._retiring: list[str] = []
        self._lease_released = asyncio.Event()

    async def __aenter__(self) -> Router:
        self._ttl_task = asyncio.create_task(self._ttl_loop(), name="llamaswap-ttl")
        if self._needs and not self.config.devices:
            await self._detect_devices()
        return self

    async def _detect_devices(self) -> None:
        """No `devices` declared but models are placed by memory: use the detected cards,
        checked as declared ones are; none → placement is off and groups decide."""
        cards = await asyncio.to_thread(detect_cards)
        capacity = device_capacities({}, [(c.index, c.memory) for c in cards])
        if not capacity:
            log.warning(
                "models %s would be placed by memory (resources or a GGUF estimate) but no "
                "devices are declared or detected: placement is off, groups decide",
                ", ".join(sorted(self._needs)),
            )
            return
        log.info(
            "placing models on detected devices: %s",
            ", ".join(f"{d} {format_size(b)}" for d, b in capacity.items()),
        )
        devices = {d: DeviceConfig(memory=b) for d, b in capacity.items()}
        for model in self.config.models.values():
            if model.id in self._needs and model.resources is not None:
                for problem in model_resource_problems(model.id, model.resources, devices):
                    log.warning("%s: %s", problem.path, problem.message)
        self._apply(self._scheduler.on_devices(capacity, self._clock()))

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ---- requests --------------------------------------------------------------------------

    async def acquire(self, model: str, on_queue: QueueListener | None = None) -> Lease:
        """Wait until `model` is ready and this request holds a lease on it.

        Raises RequestError (404/429/500/503). If the caller is cancelled (client left), its
        place is freed, including a lease granted in the same instant. A request waiting
        here when a reload hands over is passed on to the new config's router.
        """
        try:
            return await self._acquire_here(model, on_queue)
        except RequestError as exc:
            if self._successor is None or exc.status != 503:
                raise
        successor = await asyncio.shield(self._successor)
        return await successor.acquire(model, on_queue)

    async def _acquire_here(self, model: str, on_queue: QueueListener | None) -> Lease:
        request_id = self._new_request_id()
        asked = self._clock()
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        if on_queue is not None:
            self._queue_listeners[request_id] = on_queue
        try:
            effects = self._scheduler.on_request(request_id, model, self._clock())
            self._apply(effects, wake=not _granted_at_once(effects))
            lease = await future
            metrics.lease_granted(self.events, model, self._clock() - asked)
            return lease
        except asyncio.CancelledError:
            self._apply(self._scheduler.on_cancel(request_id, self._clock()))
            raise
        finally:
            self._waiters.pop(request_id, None)
            self._queue_listeners.pop(request_id, None)

    def _new_request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _release(self, request_id: int, model: str) -> None:
        handed = self._handed_leases.pop(request_id, None)
        if handed is not None:
            handed()  # the model was adopted by the next config's router
            return
        if not self._closed:
            effects = self._scheduler.on_served(request_id, self._clock())
            # Still busy and nothing changed for anyone else: no deadline moved earlier.
            self._apply(effects, wake=bool(effects) or self._scheduler.lease_count(model) == 0)
            self._lease_released.set()
            self._leases_changed()

    # ---- operator actions ------------------------------------------------------------------

    async def unload(self, models: list[str] | None = None) -> None:
        """Stop `models` (None = every model) now; waiters for them are told."""
        effects = self._scheduler.on_unload(models, self._clock())
        stops = [e for e in effects if isinstance(e, StopModels)]
        self._apply([e for e in effects if not isinstance(e, StopModels)])
        await asyncio.gather(*(self._stop_models(stop) for stop in stops))

    def keep_alive(self, model: str, ttl: float) -> None:
        """Ollama's `keep_alive`: the ready `model` stops after `ttl` idle seconds (0 = never)
        instead of its configured ttl, until it stops."""
        self._scheduler.on_keep_alive(model, ttl)
        self._wake.set()  # the ttl loop's next deadline may have moved

    async def shutdown(self) -> None:
        """Reject every waiter, stop every process, end every background task."""
        if self._closed:
            return
        self._apply(self._scheduler.on_shutdown())
        self._closed = True
        if self._ttl_task is not None:
            self._ttl_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ttl_task is not None:
            await asyncio.gather(self._ttl_task, return_exceptions=True)
        await asyncio.gather(
            *(p.shutdown(graceful_timeout=5.0) for p in self.processes.values()),
            return_exceptions=True,
        )

    # ---- views -----------------------------------------------------------------------------

    def state(self, model: str) -> ProcessState:
        state = self.processes[model].state
        if state is ProcessState.READY and self._scheduler.phase(model) is Phase.ASLEEP:
            return ProcessState.ASLEEP
        return state

    def upstream_if_ready(self, model: str) -> str | None:
        """The model's upstream URL when it is ready now, without a lease (for traffic that
        must neither start a model nor hold one back from a swap, e.g. ignored websockets)."""
        if self.state(model) is ProcessState.READY:  # not asleep
            return self.config.models[model].proxy
        return None

    def queue_depth(self) -> int:
        return self._scheduler.queue_depth()

    def lease_count(self, model: str) -> int:
        return self._scheduler.lease_count(model)

    def ttl(self, model: str) -> float:
        """Idle seconds before `model` is stopped (0 = never), with its `keep_alive`."""
        return self._scheduler.ttl(model)

    def queued(self, model: str) -> int:
        """Requests for `model` waiting for it to load, or for a free slot."""
        return self._scheduler.waiting_for(model)

    @property
    def policy(self) -> Policy:
        return self._scheduler.policy

    def load_time(self, model: str) -> float | None:
        """The learned start→ready seconds of `model`, if it was ever loaded."""
        learned = self._scheduler.load_time(model)
        return None if learned is None else learned.seconds

    def load_times(self) -> dict[str, LoadTime]:
        return self._scheduler.load_times()

    def backoff(self, model: str) -> BackoffState | None:
        """The model's crash-loop backoff while it lasts."""
        return self._scheduler.backoff(model, self._clock())

    def backoff_left(self, state: BackoffState) -> float:
        return max(0.0, state.until - self._clock())

    def ready_since(self, model: str) -> float | None:
        """Wall-clock time at which `model` last became ready, while it is running."""
        return self._ready_since.get(model)

    def idle_for(self, model: str) -> float | None:
        """Seconds since `model`'s last request finished (or it became ready), when it is
        ready with nothing in flight; else None."""
        if self.state(model) is not ProcessState.READY or self.lease_count(model):
            return None
        since = self._scheduler.idle_since(model)
        return None if since is None else max(0.0, self._clock() - since)

    def capacity(self) -> dict[str, int]:
        """Bytes per device placement places models on (empty: placement is off)."""
        return self._scheduler.capacity()

    def memory_of(self, model: str) -> ModelMemory | None:
        """Where placement put `model` and what it holds there (None: not placed by memory,
        or never placed yet)."""
        devices = self._scheduler.devices_of(model)
        counted = self._scheduler.usage_of(model)
        if devices is None or counted is None:
            return None
        measured = self._measured.get(model)
        return ModelMemory(
            devices,
            usage_on(self._needs[model], devices),
            counted,
            measured[1] if measured and measured[0] == self.processes[model].pid else None,
            "estimate" if self.config.models[model].resources is None else "resources",
            self._asleep_host.get(model),
        )

    # ---- effects ---------------------------------------------------------------------------

    def _apply(self, effects: list[Effect], wake: bool = True) -> None:
        """Carry out the scheduler's decisions. `wake=False` when the event cannot have moved
        the ttl loop's next deadline earlier (the loop then sleeps on; a deadline that moved
        later only costs it one tick that finds nothing due): with nobody waiting, that
        deadline is the earliest ttl expiry of an idle model, and a model that takes or keeps
        a lease is not idle. Under load this spares the loop a wake-up per request."""
        for effect in effects:
            if isinstance(effect, Grant):
                self._grant(effect)
            elif isinstance(effect, Reject):
                self._reject(effect)
            elif isinstance(effect, StartSwap):
                if effect.evict:
                    self._record_eviction(effect)
                self.spawn_background(self._run_swap(effect), f"swap-{effect.target}")
            elif isinstance(effect, StopModels):
                self.spawn_background(self._stop_models(effect), "stop")
            elif isinstance(effect, CancelStart):
                log.info("every request waiting for %s left: aborting its start", effect.target)
                self.spawn_background(self._abort_start(effect.target), "abort")
            elif isinstance(effect, QueuePosition):
                listener = self._queue_listeners.get(effect.request_id)
                if listener is not None:
                    listener(effect.position)
        depth = self._scheduler.queue_depth()
        if wake or depth:
            self._wake.set()
        if depth != self._last_queue_depth:  # for the UI's queue-over-time chart
            self._last_queue_depth = depth
            self.events.publish("queue", {"depth": depth})

    def _grant(self, grant: Grant) -> None:
        future = self._waiters.get(grant.request_id)
        model = self.config.models[grant.model]
        lease = Lease(
            grant.model,
            model.proxy,
            lambda: self._release(grant.request_id, grant.model),
            connect_timeout=float(model.timeouts.connect),
            header_timeout=float(model.timeouts.response_header),
        )
        if future is None or future.done():
            lease.release()  # the caller already left: never leave a lease dangling
            return
        future.set_result(lease)
        self._leases_changed()

    def _leases_changed(self) -> None:
        """A model's in-flight count changed. Only `/api/events` clients read it (from the
        router, when told): with none connected there is no one to tell."""
        if self.events.wanted("leases"):
            self.events.publish("leases", None)

    def _reject(self, reject: Reject) -> None:
        future = self._waiters.get(reject.request_id)
        if future is None or future.done():
            return
        error: RequestError
        if reject.status == 429:
            error = TooManyRequests(
                reject.message, code=reject.code, retry_after=reject.retry_after
            )
        else:
            error = RequestError(reject.message, status=reject.status, code=reject.code)
        future.set_exception(error)

    def spawn_background(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"llamaswap-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_swap(self, swap: StartSwap) -> None:
        started = self._clock()
        error: str | None = None
        load_time: float | None = None
        target = self.processes[swap.target]
        evicted = sorted(swap.evict)
        slept: list[bool] = []
        try:
            timeout = float(self.config.health_check_timeout)
            slept = await asyncio.gather(
                *(
                    release_device(
                        self.processes[m], self.config.models[m], m in swap.sleep, timeout
                    )
                    for m in evicted
                )
            )
            if swap.wake:
                waking = self._clock()
                await wake(target, self.config.models[swap.target], timeout)
                load_time = self._clock() - waking
            cold = not swap.wake and target.state is not ProcessState.READY
            if cold:
                target.assign_devices(self._gpu_indices(swap.target))
            loading = self._clock()
            await target.ensure_ready()
            if cold:
                load_time = self._clock() - loading
            # A woken process takes its memory back: measured again, it may hold more.
            if (cold or swap.wake) and self._scheduler.devices_of(swap.target) is not None:
                self.spawn_background(self._measure(swap.target), f"measure-{swap.target}")
        except UpstreamError as exc:
            error = str(exc)
        # A failed start is something to act on: warn, so it is seen at the default level.
        log.log(
            logging.WARNING if error else logging.INFO,
            "%s %s (evicted %s) %s in %.2fs",
            "wake of" if swap.wake else "swap to",
            swap.target,
            ", ".join(
                m + (" (asleep)" if asleep else "")
                for m, asleep in zip(evicted, slept, strict=False)
            )
            or "nothing",
            "failed: " + error if error else "done",
            self._clock() - started,
        )
        metrics.swap_done(self.events, swap.target, swap.evict, error, self._clock() - started)
        self.events.publish(
            "swap",
            {
                "target": swap.target,
                "evicted": sorted(swap.evict),
                "error": error,
                "duration_s": self._clock() - started,
                "load_s": load_time,
            },
        )
        if not self._closed:
            asleep = [m for m, ok in zip(evicted, slept, strict=False) if ok]
            self._apply(
                self._scheduler.on_swap_done(swap.swap_id, error, self._clock(), load_time, asleep)
            )
            for model in asleep:
                self._publish_state(model, ProcessState.READY, ProcessState.ASLEEP)
            if swap.wake and error is None:
                self._publish_state(swap.target, ProcessState.ASLEEP, ProcessState.READY)
            self._after_swap(swap.target, error, None if swap.wake else load_time)

    def _record_eviction(self, swap: StartSwap) -> None:
        """Publish why `swap` evicts (kept by the bus for `/running` and the UI), taken
        before anything left, so the free bytes are the ones the decision saw."""
        placed = self._scheduler.devices_of(swap.target) is not None
        holding = {}
        for model in self.processes:
            usage = self._scheduler.usage_of(model)
            busy = self.state(model) in (
                ProcessState.STARTING,
                ProcessState.READY,
                ProcessState.STOPPING,
            )
            if model != swap.target and busy and usage is not None:
                holding[model] = usage
        record = eviction_record(
            at=time.time(),
            target=swap.target,
            evicted=swap.evict,
            slept=swap.sleep,
            needed=(self._scheduler.usage_of(swap.target) or {}) if placed else {},
            capacity=self._scheduler.capacity(),
            holding=holding,
        )
        self.events.publish("eviction", record)

    def _publish_state(self, model: str, old: ProcessState, new: ProcessState) -> None:
        self.events.publish("modelState", {"id": model, "old": old.value, "new": new.value})

    def _gpu_indices(self, model: str) -> tuple[int, ...] | None:
        """Runtime indices of the devices placement put `model` on (None: not placed)."""
        devices = self._scheduler.devices_of(model)
        return None if devices is None else runtime_indices(self.config.devices, devices)

    async def _measure(self, model: str) -> None:
        """Once `model` is ready, count what its processes really hold (max with what it
        was placed with), and warn when that is more than it declared."""
        pid = self.processes[model].pid
        placed = self._scheduler.usage_of(model)
        if pid is None or placed is None:
            return
        measured = await asyncio.to_thread(measure_tree, pid, self._device_names)
        if measured is None or self._closed or self.processes[model].pid != pid:
            return
        leaving = any(model in swap.evict for swap in self._scheduler.active_swaps())
        if leaving or self.state(model) is not ProcessState.READY:
            return  # being put to sleep or stopped meanwhile: the reading may miss memory
        check_declared(model, placed, measured)
        self._measured[model] = (pid, measured)
        self._scheduler.on_measured(model, measured)
        self.events.publish("modelStatusChanged", {"id": model})

    def _after_swap(self, model: str, error: str | None, load_time: float | None) -> None:
        """Publish what the swap taught: a new load time, or a crash-loop backoff."""
        learned = self._scheduler.load_time(model)
        if load_time is not None and learned is not None and self._on_load_time is not None:
            self._on_load_time(model, learned)
        backoff = self.backoff(model)
        if error is not None and backoff is not None:
            log.error(
                "%s failed to start %d times in a row: refusing its requests for %.0fs",
                model,
                backoff.failures,
                self.backoff_left(backoff),
            )
        self.events.publish("modelStatusChanged", {"id": model})

    async def _abort_start(self, model: str) -> None:
        await self.processes[model].stop(float(self.config.models[model].unload_timeout))

    async def _stop_models(self, stop: StopModels) -> None:
        async def stop_one(model: str) -> None:
            timeout = float(self.config.models[model].unload_timeout)
            await self.processes[model].stop(timeout)
            log.info("stopped %s (%s)", model, stop.reason.value)
            metrics.stopped(self.events, model, stop.reason.value)
            if not self._closed:
                self._apply(self._scheduler.on_stopped(model, self._clock()))

        await asyncio.gather(*(stop_one(m) for m in sorted(stop.models)))

    async def _ttl_loop(self) -> None:
        # `asyncio.timeout`, not `wait_for`: on 3.11 `wait_for` swallows a cancellation that
        # arrives when the awaited event is already set, which left shutdown waiting out a
        # whole ttl with the models still running.
        while not self._closed:
            deadline = self._scheduler.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                effects = self._scheduler.on_tick(self._clock())
                for effect in effects:
                    if isinstance(effect, StopModels) and effect.reason is StopReason.TTL:
                        log.info("ttl expired for %s", ", ".join(sorted(effect.models)))
                self._apply(effects)

    # ---- reload ----------------------------------------------------------------------------

    async def hand_over(self, config: Config) -> Router:
        """Build and start the router for a reloaded `config`, handing it this router's work.

        1. Stop taking requests: waiting and newly arriving requests are passed to the new
           router as soon as it exists (nobody sees an error).
        2. A ready model whose process settings did not change is adopted with the leases of
           its in-flight requests: it keeps running and those requests keep streaming.
        3. Every other running process (changed, removed, or in the middle of starting or
           stopping) is retired in the background: once its in-flight requests finish (at
           most RETIRE_DRAIN_S) it is stopped (a start in progress is aborted); until then
           the new router treats it as stopping, so it is started afresh only afterwards.
           Not waiting for a long model load keeps a reload from stalling every request.
        """
        successor_future: asyncio.Future[Router] = asyncio.get_running_loop().create_future()
        self._successor = successor_future
        self._apply(self._scheduler.on_shutdown())
        if self._ttl_task is not None:
            self._ttl_task.cancel()
        try:
            successor = self._build_successor(config)
            await successor.__aenter__()
        except BaseException:
            successor_future.set_exception(RequestError("config reload failed", status=503))
            raise
        successor_future.set_result(successor)
        successor.spawn_background(self._retire(successor), "retire")
        return successor

    def _build_successor(self, config: Config) -> Router:
        adopted: dict[str, UpstreamProcess] = {}
        sleeping: set[str] = set()
        for model_id, process in self.processes.items():
            model = config.models.get(model_id)
            if process.state is ProcessState.STOPPED:
                continue
            phase = self._scheduler.phase(model_id)
            if (
                model is not None
                and process.state is ProcessState.READY
                and phase in (Phase.READY, Phase.ASLEEP)
                and same_launch(process.spec, process_spec(model, config.health_check_timeout))
            ):
                adopted[model_id] = process
                if phase is Phase.ASLEEP:
                    sleeping.add(model_id)
            else:
                self._retiring.append(model_id)
        successor = Router(
            config,
            events=self.events,
            upstream_log=self.upstream_log,
            clock=self._clock,
            adopted=adopted,
            log_buffers=self.logs,
            load_times=self._scheduler.load_times(),
            on_load_time=self._on_load_time,
        )
        for model_id in adopted:
            if model_id in self._ready_since:
                successor._ready_since[model_id] = self._ready_since[model_id]
            if model_id in self._measured:
                successor._measured[model_id] = self._measured[model_id]
        now = self._clock()
        for model_id in adopted:
            devices = self._scheduler.devices_of(model_id)
            usage = self._scheduler.usage_of(model_id)
            placement = (devices, usage) if devices is not None and usage is not None else None
            if model_id in sleeping:
                # It sleeps on where the new config still lets it sleep; else it is stopped
                # (a wake needs its place back, and the new config may not know it).
                if placement is not None and successor._scheduler.can_sleep(model_id):
                    idle_since = self._scheduler.idle_since(model_id)
                    successor._scheduler.adopt_asleep(
                        model_id, now if idle_since is None else idle_since, placement
                    )
                    del self.processes[model_id]
                else:
                    self._retiring.append(model_id)
                continue
            old_ids = self._scheduler.leases_on(model_id)
            new_ids = [successor._new_request_id() for _ in old_ids]
            successor._scheduler.adopt_ready(model_id, new_ids, now, placement)
            for old_id, new_id in zip(old_ids, new_ids, strict=True):
                self._handed_leases[old_id] = functools.partial(
                    successor._release, new_id, model_id
                )
            del self.processes[model_id]
        for model_id in self._retiring:
            if model_id in successor.processes:
                successor._scheduler.adopt_stopping(model_id)
        log.info(
            "reload: kept %s running; restarting or stopping %s",
            ", ".join(m + (" (asleep)" if m in sleeping else "") for m in sorted(adopted))
            or "nothing",
            ", ".join(sorted(self._retiring)) or "nothing",
        )
        return successor

    async def _retire(self, successor: Router) -> None:
        """Stop the processes the successor did not adopt, each once its requests are done."""

        async def retire(model_id: str) -> None:
            deadline = self._clock() + RETIRE_DRAIN_S
            while self._scheduler.lease_count(model_id) and self._clock() < deadline:
                self._lease_released.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - self._clock()):
                        await self._lease_released.wait()
            cut = self._scheduler.lease_count(model_id)
            if cut:
                log.warning("reload: cutting %d requests still running on %s", cut, model_id)
            await self.processes[model_id].shutdown(
                float(self.config.models[model_id].unload_timeout)
            )
            log.info("reload: stopped the previous process of %s", model_id)
            successor._on_retired(model_id)

        try:
            await asyncio.gather(*(retire(m) for m in self._retiring))
        finally:
            await self.shutdown()

    def _on_retired(self, model: str) -> None:
        if not self._closed and model in self.processes:
            self._apply(self._scheduler.on_stopped(model, self._clock()))

    # ---- process callbacks -----------------------------------------------------------------

    def _on_state_change(self, model: str, old: ProcessState, new: ProcessState) -> None:
        if new is ProcessState.READY:
            self._ready_since[model] = time.time()
        elif new is not ProcessState.STOPPING:
            self._ready_since.pop(model, None)
        self.events.publish("modelState", {"id": model, "old": old.value, "new": new.value})

    def _on_unexpected_exit(self, model: str, code: int | None) -> None:
        log.warning("upstream %s exited unexpectedly (code %s)", model, code)
        if not self._closed:
            self._apply(self._scheduler.on_exited(model, self._clock()))


def _granted_at_once(effects: list[Effect]) -> bool:
    """A request granted on arrival, and nothing else decided."""
    return bool(effects) and all(isinstance(effect, Grant) for effect in effects)
