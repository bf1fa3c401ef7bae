"""The handle of one upstream child: spawning it in its own process group, and ending it.

Ending (spec §3.5, [H]): run `cmdStop` (with `${PID}` substituted, no shell, same env) or
send SIGTERM to the whole process group; after the graceful timeout SIGKILL the group;
then wait, bounded, for the stdout/stderr pipe to close, since forked grandchildren can
hold it open (llama-swap's "v219 hang").

Orphans: on Linux each child gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies if llamaswap is
SIGKILLed. That setting is *not* inherited by processes the child forks (a shell wrapper's
real server), which is why the child also leads its own process group: every normal stop
path kills the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from llamaswap.errors import StartError
from llamaswap.observe.logbuffer import LogBuffer

__all__ = ["PIPE_CLOSE_TIMEOUT", "Child", "spawn"]

log = logging.getLogger("llamaswap.supervisor")

PIPE_CLOSE_TIMEOUT = 10.0
_KILL_WAIT = 5.0
_PR_SET_PDEATHSIG = 1
_TAIL_BYTES = 4096


def _parent_death_hook() -> Callable[[], None] | None:
    """Return a `preexec_fn` that makes the child die with its parent (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # If the parent died before prctl took effect, the signal will never come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


class Child:
    """A running upstream child: its process, its output pump and its exit signal."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        output: asyncio.ReadTransport,
        reader: asyncio.StreamReader,
        logs: LogBuffer,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._popen = popen
        self._output = output
        self.pid: int = popen.pid
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        # Resolves on the exit itself: a forked grandchild may keep the pipe open for ever.
        self.exited: asyncio.Future[None] = loop.create_future()
        self._watch_exit(loop)
        self._pump = loop.create_task(self._pump_output(reader, logs), name=f"pump-{self.pid}")

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap the child as soon as it exits: a pidfd on Linux, else a waiting thread."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            waiting = loop.run_in_executor(None, self._popen.wait)
            waiting.add_done_callback(lambda _: self._mark_exited())
            return

        def readable() -> None:
            if self._popen.poll() is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                self._mark_exited()

        loop.add_reader(pidfd, readable)

    def _mark_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    @property
    def returncode(self) -> int | None:
        """Exit code, negative for a signal, None while running."""
        return self._popen.returncode

    def last_lines(self, count: int = 10) -> str:
        """The last `count` lines the child printed (for error messages)."""
        text = b"".join(self._tail).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-count:])

    async def _pump_output(self, reader: asyncio.StreamReader, logs: LogBuffer) -> None:
        while chunk := await reader.read(65536):
            logs.write(chunk)
            self._tail.append(chunk)
            self._tail_len += len(chunk)
            while self._tail_len - len(self._tail[0]) >= _TAIL_BYTES:
                self._tail_len -= len(self._tail.popleft())

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's process group (ignores a group that is already gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _wait_exit(self, within: float) -> bool:
        if not self.exited.done():
            await asyncio.wait({self.exited}, timeout=within)
        return self.exited.done()

    async def _run_stop_command(
        self, argv: Sequence[str], env: Mapping[str, str], logs: LogBuffer, within: float
    ) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            log.warning("cmdStop %r failed to start: %s", list(argv), exc)
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), within)
            logs.write(out)
            if proc.returncode:
                log.warning("cmdStop %r exited with code %s", list(argv), proc.returncode)
        except TimeoutError:
            log.warning("cmdStop %r did not finish in %ss; killing it", list(argv), within)
            proc.kill()
            await proc.wait()

    async def terminate(
        self,
        graceful_timeout: float,
        *,
        stop_argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        logs: LogBuffer | None = None,
    ) -> None:
        """End the child: graceful signal, SIGKILL of the group after the grace, reap pipes.

        Safe to call on a child that already exited (its leftover group is still killed).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(graceful_timeout, 0.0)
        if not self.exited.done() and graceful_timeout > 0:
            if stop_argv:
                await self._run_stop_command(
                    stop_argv, env or os.environ, logs or LogBuffer(1), graceful_timeout
                )
            else:
                self.signal_group(signal.SIGTERM)
            await self._wait_exit(max(deadline - loop.time(), 0.0))
        if not self.exited.done():
            log.info("upstream pid %s did not exit gracefully; sending SIGKILL", self.pid)
        # Also after a graceful exit: forked children left in the group must not outlive it.
        self.signal_group(signal.SIGKILL)
        await self._wait_exit(_KILL_WAIT)
        await self.close()

    async def close(self) -> None:
        """Wait (bounded) for the output pipe to close, then release the transport."""
        await asyncio.wait({self._pump}, timeout=PIPE_CLOSE_TIMEOUT)
        if self._pump.done() and not self._pump.cancelled() and self._pump.exception():
            log.warning("upstream pid %s: output pump failed: %r", self.pid, self._pump.exception())
        if not self._pump.done():
            log.warning("upstream pid %s: output pipe still open; abandoning it", self.pid)
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._output.close()

    def kill_now(self) -> None:
        """Synchronous last resort (owner cancelled): SIGKILL the group, drop the transport."""
        self.signal_group(signal.SIGKILL)
        self._pump.cancel()
        self._output.close()


# Forking a big process blocks its thread for milliseconds (page tables are copied), so the
# fork happens on this thread instead of the event loop's (measured under uvloop with 60 MiB
# resident: the loop stalled 10-20 ms per spawn in the loop, under 5 ms this way). One
# long-lived thread, because PR_SET_PDEATHSIG fires when the *thread* that forked exits.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamaswap-spawn")


async def _end_unwanted(popen: subprocess.Popen[bytes]) -> None:
    """A child whose start was aborted before it had a handle: kill its group and reap it,
    so that its port is free when this returns (the next start may bind the same port)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    if popen.stdout is not None:
        popen.stdout.close()
    await asyncio.to_thread(popen.wait)


async def spawn(argv: Sequence[str], env: Mapping[str, str], logs: LogBuffer) -> Child:
    """Start `argv` in a new session (own process group), output piped into `logs`."""
    loop = asyncio.get_running_loop()
    preexec = _parent_death_hook()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            # Safe on a thread: the hook only makes two syscalls and takes no Python lock.
            preexec_fn=preexec,  # noqa: PLW1509
        )

    starting = loop.run_in_executor(_SPAWNER, start)
    try:
        popen = await asyncio.shield(starting)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise StartError(f"failed to start command '{' '.join(argv)}': {exc}") from exc
    except asyncio.CancelledError:
        # Aborted mid-fork: the child exists (or will in a moment) and has no owner yet.
        with contextlib.suppress(Exception):
            await _end_unwanted(await starting)
        raise
    try:
        assert popen.stdout is not None
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        output, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), popen.stdout
        )
    except BaseException:
        await _end_unwanted(popen)
        raise
    return Child(popen, output, reader, logs)
