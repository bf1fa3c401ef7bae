"""`UpstreamProcess`: the state machine of one upstream child and its single owner task.

Callers never mutate the state: `ensure_ready()`, `stop()` and `shutdown()` send an intent
to the owner task and await its answer. Only the owner changes `state`, so there is no
window between reading a state and acting on it (llama-swap issue #946).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from llamaswap.errors import CommandError, ProcessShutdown, StartAborted, StartError
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor.command import build_argv, build_env, substitute_pid
from llamaswap.supervisor.devices import device_env, substitute_gpu
from llamaswap.supervisor.health import health_url, wait_healthy
from llamaswap.supervisor.ports import check_port_free, confirm_owner, local_port
from llamaswap.supervisor.terminate import Child, spawn

__all__ = ["FAILED_START_GRACE", "ProcessSpec", "ProcessState", "UpstreamProcess"]

log = logging.getLogger("llamaswap.supervisor")

FAILED_START_GRACE = 5.0
"""Graceful timeout used to end a child whose start failed (health timeout)."""


class ProcessState(enum.Enum):
    """Lifecycle state of an upstream process (spec §3.3)."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"
    # Never the owner's own state (its child is READY): what the router reports for a model
    # it put to sleep (supervisor/sleep.py), so every view shows it.
    ASLEEP = "asleep"


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one model and how to tell it is ready."""

    model_id: str
    cmd: str
    cmd_stop: str
    proxy: str
    check_endpoint: str  # "none" disables health checks
    env: tuple[str, ...]
    health_check_timeout: float
    # Runtime indices of the device(s) placement chose (None: not placed): they fill
    # `${GPU}` and CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES (supervisor/devices.py).
    gpus: tuple[int, ...] | None = None

    def command(self) -> str:
        """`cmd` with `${GPU}` filled."""
        return substitute_gpu(self.cmd, self.gpus or ())

    def environment(self) -> tuple[str, ...]:
        """`env` with `${GPU}` filled and the visibility variables it lacks."""
        return tuple(device_env(self.env, self.gpus))


class _Activity(enum.Enum):
    START = "start"  # spawning + health checking
    WATCH = "watch"  # ready: waiting for an unexpected exit
    STOP = "stop"  # ending a ready child
    CLEANUP = "cleanup"  # ending the child of a failed or aborted start
    REAP = "reap"  # releasing a child that exited on its own


@dataclass
class _Ensure:
    reply: asyncio.Future[None]


@dataclass
class _Stop:
    graceful_timeout: float
    reply: asyncio.Future[None]
    shutdown: bool = False


@dataclass
class _Waiters:
    """Futures waiting on the owner, settled together."""

    futures: list[asyncio.Future[None]] = field(default_factory=list)

    def settle(self, exc: BaseException | None = None) -> None:
        for fut in self.futures:
            if fut.done():
                continue  # the caller gave up (cancelled)
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        self.futures.clear()


def _settle_one(fut: asyncio.Future[None], exc: BaseException | None = None) -> None:
    _Waiters([fut]).settle(exc)


class UpstreamProcess:
    """One upstream child process, owned by one task that makes every state change.

    Decision tree of the owner, per intent:

    ensure_ready:
      1. shut down (or shutting down) -> fail with `ProcessShutdown("[<id>] shutdown")`.
      2. ready -> answer at once.
      3. starting (start in progress) -> wait for that same start.
      4. a stop/cleanup/reap is in progress (stopping, aborting, reaping a crash) -> queue;
         when it finishes the owner starts again (#946).
      5. stopped and idle -> check that a local port is free, spawn, health-check, check that
         the listener is the child's own (supervisor/ports.py), answer when ready.
    stop(t) / shutdown(t):
      1. shutdown marks the owner as terminating; queued ensure_ready callers fail with
         `ProcessShutdown` (for plain stop: `StartAborted`, the stop supersedes them).
      2. already shut down -> answer at once.
      3. stopped and idle -> answer at once (shutdown: enter `shutdown` first).
      4. ready -> `stopping`; end the child with grace `t`; `stopped`; answer.
      5. starting -> abort: cancel the health check, end the child with grace `t`, go to
         `stopped` (no `stopping` state), fail the start's waiters with `StartAborted`.
      6. a stop/cleanup/reap is in progress -> answer when it finishes.
    activities finishing:
      1. start succeeded -> `ready`; waiters answered; watch for an unexpected exit.
      2. start failed -> end the child (5 s grace), `stopped`, waiters get the error.
      3. child exited while ready -> `stopped`, logged "exited unexpectedly",
         `on_unexpected_exit(id, code)`; release its pipes.
      4. a stop/cleanup/reap finished -> answer stoppers; then if terminating -> `shutdown`
         (the owner ends); elif callers are queued -> start (step 5 of ensure_ready).
    """

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        logs: LogBuffer,
        on_state_change: Callable[[str, ProcessState, ProcessState], None] | None = None,
        on_unexpected_exit: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self.spec = spec
        self.logs = logs
        self._on_state_change = on_state_change
        self._on_unexpected_exit = on_unexpected_exit
        self._state = ProcessState.STOPPED
        self._child: Child | None = None
        self._inbox: asyncio.Queue[_Ensure | _Stop] = asyncio.Queue()
        self._owner: asyncio.Task[None] | None = None
        self._closed = False
        # Owner-private bookkeeping.
        self._activity: _Activity | None = None
        self._activity_task: asyncio.Future[Any] | None = None
        self._start_error: BaseException | None = None
        self._starters = _Waiters()  # waiting for the current start
        self._queued = _Waiters()  # waiting for a stop to finish, then a start
        self._stoppers = _Waiters()
        self._terminating = False
        self._abort_grace = FAILED_START_GRACE
        self._abort_requested = False

    # -- public API -------------------------------------------------------------------------
    @property
    def state(self) -> ProcessState:
        """Current state (changed only by the owner task)."""
        return self._state

    @property
    def pid(self) -> int | None:
        """Pid of the running child, if any."""
        return self._child.pid if self._child is not None else None

    def rebind(
        self,
        spec: ProcessSpec,
        *,
        on_state_change: Callable[[str, ProcessState, ProcessState], None] | None,
        on_unexpected_exit: Callable[[str, int | None], None] | None,
    ) -> None:
        """Hand the running process to a new owner (a config reload that did not change how
        it is started). `spec` may differ only in settings read at the next start."""
        self.spec = spec
        self._on_state_change = on_state_change
        self._on_unexpected_exit = on_unexpected_exit

    def assign_devices(self, gpus: tuple[int, ...] | None) -> None:
        """The device indices the next start runs on (placement's choice; None: not placed).
        A running child keeps its own."""
        self.spec = replace(self.spec, gpus=gpus)

    async def ensure_ready(self) -> None:
        """Return once the process is ready, starting it (or waiting for a stop) as needed."""
        if self._closed:
            raise ProcessShutdown(f"[{self.spec.model_id}] shutdown")
        reply = self._send_ensure()
        await reply

    async def stop(self, graceful_timeout: float) -> None:
        """Stop the child (abort a start in progress); no-op when stopped."""
        if self._closed:
            return
        await self._send_stop(graceful_timeout, shutdown=False)

    async def shutdown(self, graceful_timeout: float) -> None:
        """Stop the child, then enter the terminal `shutdown` state and end the owner task."""
        if not self._closed:
            await self._send_stop(graceful_timeout, shutdown=True)
        if self._owner is not None:
            await asyncio.shield(self._owner)

    async def __aenter__(self) -> UpstreamProcess:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(FAILED_START_GRACE)

    # -- sending intents --------------------------------------------------------------------
    def _ensure_owner(self) -> None:
        if self._owner is None:
            self._owner = asyncio.get_running_loop().create_task(
                self._run(), name=f"upstream-{self.spec.model_id}"
            )

    def _send_ensure(self) -> asyncio.Future[None]:
        self._ensure_owner()
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Ensure(reply))
        return reply

    async def _send_stop(self, graceful_timeout: float, *, shutdown: bool) -> None:
        self._ensure_owner()
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Stop(graceful_timeout, reply, shutdown))
        await reply

    # -- the owner --------------------------------------------------------------------------
    async def _run(self) -> None:
        getter: asyncio.Task[_Ensure | _Stop] | None = None
        try:
            while self._state is not ProcessState.SHUTDOWN:
                if getter is None:
                    getter = asyncio.ensure_future(self._inbox.get())
                waiting: set[asyncio.Future[Any]] = {getter}
                if self._activity_task is not None:
                    waiting.add(self._activity_task)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self._activity_task is not None and self._activity_task.done():
                    self._activity_done()
                if getter.done():
                    intent = getter.result()
                    getter = None
                    self._handle(intent)
        finally:
            if getter is not None:
                getter.cancel()
            self._closed = True
            self._drain_inbox()
            if self._activity_task is not None and not self._activity_task.done():
                # Only reached if the owner itself was cancelled: never leave a child behind.
                self._activity_task.cancel()
            if self._child is not None:
                self._child.kill_now()
                self._child = None

    def _drain_inbox(self) -> None:
        shutdown = ProcessShutdown(f"[{self.spec.model_id}] shutdown")
        self._queued.settle(shutdown)
        self._starters.settle(StartAborted(f"[{self.spec.model_id}] start aborted"))
        self._stoppers.settle()
        while not self._inbox.empty():
            intent = self._inbox.get_nowait()
            _settle_one(intent.reply, shutdown if isinstance(intent, _Ensure) else None)

    def _set_state(self, new: ProcessState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        log.debug("[%s] state %s -> %s", self.spec.model_id, old.value, new.value)
        if self._on_state_change is not None:
            try:
                self._on_state_change(self.spec.model_id, old, new)
            except Exception:
                log.exception("[%s] state-change callback failed", self.spec.model_id)

    def _begin(self, activity: _Activity, aw: asyncio.Future[Any]) -> None:
        self._activity = activity
        self._activity_task = aw

    def _handle(self, intent: _Ensure | _Stop) -> None:
        if isinstance(intent, _Ensure):
            self._handle_ensure(intent.reply)
        else:
            self._handle_stop(intent)

    def _handle_ensure(self, reply: asyncio.Future[None]) -> None:
        if self._terminating:
            _settle_one(reply, ProcessShutdown(f"[{self.spec.model_id}] shutdown"))
        elif self._state is ProcessState.READY:
            _settle_one(reply)
        elif self._activity is _Activity.START:
            self._starters.futures.append(reply)
        elif self._activity is not None:
            self._queued.futures.append(reply)
        else:
            self._starters.futures.append(reply)
            self._begin_start()

    def _handle_stop(self, intent: _Stop) -> None:
        if intent.shutdown and not self._terminating:
            self._terminating = True
            self._queued.settle(ProcessShutdown(f"[{self.spec.model_id}] shutdown"))
        elif not intent.shutdown:
            self._queued.settle(StartAborted(f"[{self.spec.model_id}] start aborted by stop"))
        self._stoppers.futures.append(intent.reply)
        if self._activity is None:
            self._idle()
        elif self._activity is _Activity.WATCH:
            self._set_state(ProcessState.STOPPING)
            self._begin(_Activity.STOP, self._end_child(intent.graceful_timeout))
        elif self._activity is _Activity.START:
            assert self._activity_task is not None
            self._abort_grace = intent.graceful_timeout
            self._abort_requested = True
            self._activity_task.cancel()  # _activity_done sees the cancellation

    def _activity_done(self) -> None:
        task, activity = self._activity_task, self._activity
        assert task is not None
        self._activity_task = self._activity = None
        if activity is _Activity.START:
            aborted_now, self._abort_requested = self._abort_requested, False
            failure = None if task.cancelled() else task.exception()
            if aborted_now or failure is not None:
                aborted = StartAborted(f"[{self.spec.model_id}] start aborted")
                self._start_error = failure or aborted
                grace = FAILED_START_GRACE if failure is not None else self._abort_grace
                self._begin(_Activity.CLEANUP, self._end_child(grace))
            else:
                self._set_state(ProcessState.READY)
                self._starters.settle()
                assert self._child is not None
                self._begin(_Activity.WATCH, self._child.exited)
            return
        if activity is _Activity.WATCH:
            child = self._child
            assert child is not None
            code = child.returncode
            log.warning("[%s] upstream exited unexpectedly (code %s)", self.spec.model_id, code)
            self._set_state(ProcessState.STOPPED)
            if self._on_unexpected_exit is not None:
                try:
                    self._on_unexpected_exit(self.spec.model_id, code)
                except Exception:
                    log.exception("[%s] unexpected-exit callback failed", self.spec.model_id)
            self._begin(_Activity.REAP, self._end_child(0))
            return
        with contextlib.suppress(BaseException):
            task.result()  # _end_child never raises; keep asyncio from warning regardless
        if activity is _Activity.CLEANUP:
            self._set_state(ProcessState.STOPPED)
            error = self._start_error or StartError("start failed")
            self._start_error = None
            self._starters.settle(error)
        self._set_state(ProcessState.STOPPED)
        self._idle()

    def _idle(self) -> None:
        """Nothing in flight: answer stoppers, then shut down or serve queued starts."""
        self._stoppers.settle()
        if self._terminating:
            self._set_state(ProcessState.SHUTDOWN)
        elif self._queued.futures:
            self._starters.futures.extend(self._queued.futures)
            self._queued.futures.clear()
            self._begin_start()

    # -- activities -------------------------------------------------------------------------
    def _begin_start(self) -> None:
        self._set_state(ProcessState.STARTING)
        task = asyncio.get_running_loop().create_task(self._start())
        self._begin(_Activity.START, task)

    def _end_child(self, graceful_timeout: float) -> asyncio.Future[Any]:
        child = self._child
        stop_argv: list[str] | None = None
        if child is not None and self.spec.cmd_stop.strip():
            try:
                cmd_stop = substitute_gpu(self.spec.cmd_stop, self.spec.gpus or ())
                stop_argv = build_argv(substitute_pid(cmd_stop, child.pid))
            except CommandError as exc:
                log.warning("[%s] invalid cmdStop: %s", self.spec.model_id, exc)

        async def end() -> None:
            if child is None:
                return
            try:
                await child.terminate(
                    graceful_timeout, stop_argv=stop_argv, env=self._env(), logs=self.logs
                )
            finally:
                if self._child is child:
                    self._child = None

        return asyncio.ensure_future(end())

    def _env(self) -> dict[str, str]:
        return build_env(self.spec.environment(), os.environ)

    async def _start(self) -> None:
        spec = self.spec
        if not spec.cmd.strip():
            raise StartError("empty command")  # llama-swap's words; check-config reports it
        if not spec.proxy:
            raise StartError("upstream proxy missing")
        try:
            argv = build_argv(spec.command())
        except CommandError as exc:
            raise StartError(f"failed to start command '{spec.command()}': {exc}") from exc
        where = local_port(spec.proxy)
        if where is not None:
            await asyncio.to_thread(check_port_free, where)
        spawned_at = time.time()
        child = await spawn(argv, self._env(), self.logs)
        self._child = child
        if spec.check_endpoint.strip().lower() == "none":
            return
        probe = asyncio.ensure_future(
            wait_healthy(health_url(spec.proxy, spec.check_endpoint), spec.health_check_timeout)
        )
        try:
            await asyncio.wait({probe, child.exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not probe.done():
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
        if probe.done() and not probe.cancelled() and probe.exception() is None:
            if where is not None:
                # A 200 proves something answers, not that it is ours (issue 12, item 1).
                await asyncio.to_thread(confirm_owner, where, child.pid, spawned_at)
            return
        if child.exited.done():
            # Let the pump catch the child's last words before quoting them.
            await child.close()
            lines = child.last_lines()
            detail = f"; last output:\n{lines}" if lines else ""
            raise StartError(
                f"upstream command exited prematurely (exit code {child.returncode}){detail}"
            )
        probe.result()  # raises the health timeout
