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

from helpers import wait_until
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor.terminate import _SPAWNER, spawn


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
    marker = f"spawn-cancel-{uuid.uuid4().hex}"
    argv = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    task = asyncio.create_task(spawn(argv, {}, LogBuffer()))
    await asyncio.sleep(0)  # the fork is now queued or under way on the spawner thread
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # The spawner runs jobs in order: once this one ran, the cancelled fork has finished.
    await asyncio.get_running_loop().run_in_executor(_SPAWNER, lambda: None)
    await wait_until(lambda: not running_with(marker), timeout=10, message="no child left")
