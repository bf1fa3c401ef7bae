"""Spawning children off the event loop: output, exit, and a start cancelled mid-fork."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import uuid
from typing import Any

import psutil
import pytest

from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor.terminate import Child, spawn


async def test_child_output_reaches_the_log_and_its_exit_is_seen() -> None:
    logs = LogBuffer()
    child = await spawn([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], {}, logs)
    await asyncio.wait_for(asyncio.shield(child.exited), 10)
    assert child.returncode == 3
    await child.close()
    assert b"hello" in logs.history()


async def test_the_fork_happens_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big process takes milliseconds to fork; the event loop must keep serving meanwhile."""
    forked_on: list[str] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        forked_on.append(threading.current_thread().name)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    child = await spawn([sys.executable, "-c", "pass"], {}, LogBuffer())
    await asyncio.wait_for(asyncio.shield(child.exited), 10)
    await child.close()
    assert len(forked_on) == 1
    assert forked_on[0].startswith("llamaswap-spawn")
    assert forked_on[0] != threading.current_thread().name


def running_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if marker in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


async def test_a_start_cancelled_while_forking_leaves_no_child() -> None:
    """The cancelled start returns only once its child is gone: the next start may need
    the same port (regression: a reload aborting a load raced the restarted model)."""
    marker = f"spawn-cancel-{uuid.uuid4().hex}"
    argv = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    for delay in (0, 0.001, 0.005, 0.02):
        task = asyncio.create_task(spawn(argv, {}, LogBuffer()))
        await asyncio.sleep(delay)  # cancel during the fork or while the pipe is connected
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if isinstance(results[0], Child):  # the spawn had already finished: end it normally
            results[0].kill_now()
            await asyncio.wait_for(asyncio.shield(results[0].exited), 10)
            await results[0].close()
        assert not running_with(marker)
