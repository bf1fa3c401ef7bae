"""UpstreamProcess against real child processes (the fake upstream) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from helpers import fake_upstream_cmd, free_port, wait_until
from helpers import pid_gone as gone
from llamaswap.errors import ProcessShutdown, StartAborted, StartError
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor.process import ProcessSpec, ProcessState, UpstreamProcess

S = ProcessState
PY = sys.executable

Factory = Callable[..., UpstreamProcess]


class Recorder:
    """Collects state changes and unexpected exits."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []
        self.exits: list[int | None] = []

    def on_state(self, model: str, old: ProcessState, new: ProcessState) -> None:
        self.states.append((old.value, new.value))

    def on_exit(self, model: str, code: int | None) -> None:
        self.exits.append(code)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make(recorder: Recorder) -> AsyncIterator[Factory]:
    """Build UpstreamProcesses; every one is shut down (and its pids checked) at teardown."""
    made: list[UpstreamProcess] = []
    pids: set[int] = set()

    def factory(
        cmd: str | None = None,
        *,
        flags: tuple[str, ...] = (),
        port: int | None = None,
        cmd_stop: str = "",
        check: str = "/health",
        env: tuple[str, ...] = (),
        health_timeout: float = 15.0,
        logs: LogBuffer | None = None,
    ) -> UpstreamProcess:
        port = port or free_port()
        spec = ProcessSpec(
            model_id="m1",
            cmd=cmd if cmd is not None else fake_upstream_cmd(port, "--model", "m1", *flags),
            cmd_stop=cmd_stop,
            proxy=f"http://127.0.0.1:{port}",
            check_endpoint=check,
            env=env,
            health_check_timeout=health_timeout,
        )
        proc = UpstreamProcess(
            spec,
            logs=logs or LogBuffer(),
            on_state_change=recorder.on_state,
            on_unexpected_exit=recorder.on_exit,
        )
        made.append(proc)
        return proc

    yield factory
    for proc in made:
        if proc.pid is not None:
            pids.add(proc.pid)
        await proc.shutdown(1.0)
        assert proc.state is S.SHUTDOWN
    for pid in pids:
        await wait_until(lambda pid=pid: gone(pid), message=f"pid {pid} gone")


async def get_text(proc: UpstreamProcess, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(proc.spec.proxy + path) as resp:
        return await resp.text()


async def test_start_stop_restart(make: Factory, recorder: Recorder) -> None:
    proc = make()
    assert proc.state is S.STOPPED and proc.pid is None
    await proc.ensure_ready()
    assert proc.state is S.READY
    first = proc.pid
    assert first is not None and not gone(first)
    assert await get_text(proc, "/test") == "hi"
    await proc.ensure_ready()  # idempotent
    assert proc.pid == first
    await proc.stop(2.0)
    assert proc.state is S.STOPPED and proc.pid is None
    assert gone(first)
    await proc.stop(2.0)  # stop on stopped: no-op
    await proc.ensure_ready()
    assert proc.pid not in (None, first)
    assert recorder.states == [
        ("stopped", "starting"),
        ("starting", "ready"),
        ("ready", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "starting"),
        ("starting", "ready"),
    ]


async def test_concurrent_ensure_ready_share_one_start(make: Factory) -> None:
    logs = LogBuffer()
    proc = make(logs=logs)
    await asyncio.gather(*(proc.ensure_ready() for _ in range(5)))
    assert proc.state is S.READY
    pids = re.findall(rb"My PID: (\d+)", logs.history())
    assert pids == [str(proc.pid).encode()]


async def test_concurrent_stops_share_one_stop(make: Factory, recorder: Recorder) -> None:
    proc = make()
    await proc.ensure_ready()
    await asyncio.gather(*(proc.stop(2.0) for _ in range(3)))
    assert proc.state is S.STOPPED
    assert recorder.states.count(("ready", "stopping")) == 1


async def test_ensure_ready_during_stop_waits_then_starts(
    make: Factory, recorder: Recorder
) -> None:
    """llama-swap #946: a request during `stopping` waits for the stop, then starts again."""
    proc = make(flags=("--ignore-sig-term",))
    await proc.ensure_ready()
    old = proc.pid
    assert old is not None
    stopping = asyncio.create_task(proc.stop(0.5))
    await wait_until(lambda: proc.state is S.STOPPING)
    await proc.ensure_ready()
    await stopping
    assert proc.state is S.READY
    assert proc.pid != old and gone(old)
    assert recorder.states[-4:] == [
        ("ready", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "starting"),
        ("starting", "ready"),
    ]


async def test_stop_during_health_check_aborts_start(make: Factory, recorder: Recorder) -> None:
    proc = make(flags=("--startup-delay", "60"))
    starting = asyncio.create_task(proc.ensure_ready())
    await wait_until(lambda: proc.pid is not None, message="spawn")
    pid = proc.pid
    assert pid is not None
    await proc.stop(1.0)
    with pytest.raises(StartAborted):
        await starting
    assert proc.state is S.STOPPED
    assert gone(pid)
    assert recorder.states == [("stopped", "starting"), ("starting", "stopped")]


async def test_shutdown_during_start(make: Factory, recorder: Recorder) -> None:
    proc = make(flags=("--startup-delay", "60"))
    starting = asyncio.create_task(proc.ensure_ready())
    await wait_until(lambda: proc.pid is not None, message="spawn")
    await proc.shutdown(1.0)
    with pytest.raises(StartAborted):
        await starting
    assert proc.state is S.SHUTDOWN
    assert recorder.states[-1] == ("stopped", "shutdown")
    with pytest.raises(ProcessShutdown, match=r"^\[m1\] shutdown$"):
        await proc.ensure_ready()
    await proc.stop(1.0)  # no-op
    await proc.shutdown(1.0)  # idempotent


async def test_exit_during_start_fails_fast(make: Factory) -> None:
    proc = make(f"{PY} -c \"import sys; print('boom'); sys.exit(3)\"", health_timeout=30)
    began = time.monotonic()
    with pytest.raises(StartError) as info:
        await proc.ensure_ready()
    assert time.monotonic() - began < 5
    message = str(info.value)
    assert "upstream command exited prematurely" in message
    assert "exit code 3" in message and "boom" in message
    assert proc.state is S.STOPPED


async def test_exit_zero_during_start(make: Factory) -> None:
    proc = make("sleep 0.2", health_timeout=30)
    with pytest.raises(StartError, match=r"exited prematurely.*exit code 0"):
        await proc.ensure_ready()
    assert proc.state is S.STOPPED


async def test_nonexistent_binary(make: Factory) -> None:
    proc = make("nonexistent-command-xyz --flag")
    for _ in range(2):  # no lasting damage: each call retries from scratch
        with pytest.raises(StartError, match=r"^failed to start command 'nonexistent-command-xyz"):
            await proc.ensure_ready()
        assert proc.state is S.STOPPED


async def test_missing_proxy(make: Factory) -> None:
    proc = make()
    proc.spec = ProcessSpec(**{**proc.spec.__dict__, "proxy": ""})
    with pytest.raises(StartError, match="upstream proxy missing"):
        await proc.ensure_ready()


async def test_health_timeout_kills_child(make: Factory) -> None:
    proc = make("sleep 30", health_timeout=0.3)
    starting = asyncio.create_task(proc.ensure_ready())
    await wait_until(lambda: proc.pid is not None, message="spawn")
    pid = proc.pid
    assert pid is not None
    with pytest.raises(StartError, match=r"^health check timed out after 0\.3s$"):
        await starting
    assert proc.state is S.STOPPED and gone(pid)


async def test_check_endpoint_none_is_ready_at_once(make: Factory) -> None:
    proc = make("sleep 30", check="none")
    began = time.monotonic()
    await proc.ensure_ready()
    assert proc.state is S.READY and time.monotonic() - began < 1


async def test_sigterm_ignored_escalates_to_sigkill(make: Factory) -> None:
    proc = make(flags=("--ignore-sig-term",))
    await proc.ensure_ready()
    pid = proc.pid
    assert pid is not None
    began = time.monotonic()
    await proc.stop(0.5)
    elapsed = time.monotonic() - began
    assert 0.5 <= elapsed < 2.0
    assert gone(pid)


async def test_cmd_stop_with_pid(make: Factory, tmp_path: Path) -> None:
    marker = tmp_path / "stopped-pid"
    stop = (
        f"{PY} -c \"import os, signal, sys; open(sys.argv[1], 'w').write(sys.argv[2]); "
        f'os.kill(int(sys.argv[2]), signal.SIGTERM)" {marker} ${{PID}}'
    )
    proc = make(cmd_stop=stop)
    await proc.ensure_ready()
    pid = proc.pid
    began = time.monotonic()
    await proc.stop(10.0)
    assert time.monotonic() - began < 5  # exited on cmdStop's SIGTERM, not the SIGKILL
    assert marker.read_text() == str(pid)


async def test_forked_child_reaped_by_group_kill(make: Factory) -> None:
    logs = LogBuffer()
    proc = make(flags=("--fork-child",), logs=logs)
    await proc.ensure_ready()
    await wait_until(lambda: b"Child PID:" in logs.history(), message="child pid printed")
    match = re.search(rb"Child PID: (\d+)", logs.history())
    assert match is not None
    child = int(match.group(1))
    assert not gone(child)
    await proc.stop(2.0)
    await wait_until(lambda: gone(child), message="grandchild gone")


async def test_env_passed(make: Factory) -> None:
    proc = make(env=("LS_TEST_A=one", "LS_TEST_B=two", "LS_TEST_A=three"))
    await proc.ensure_ready()
    body = await get_text(proc, "/env")
    assert "LS_TEST_A=three" in body and "LS_TEST_B=two" in body


async def test_logs_captured_and_fed_to_parent(make: Factory) -> None:
    upstream = LogBuffer()
    logs = LogBuffer(parents=[upstream])
    proc = make(logs=logs)
    await proc.ensure_ready()
    await wait_until(lambda: b"My PID:" in upstream.history(), message="log line")
    assert f"My PID: {proc.pid}".encode() in logs.history()


async def test_unexpected_exit(make: Factory, recorder: Recorder) -> None:
    proc = make()
    await proc.ensure_ready()
    pid = proc.pid
    assert pid is not None
    psutil.Process(pid).kill()
    await wait_until(lambda: proc.state is S.STOPPED, message="stopped after crash")
    assert recorder.exits == [-9]
    assert recorder.states[-1] == ("ready", "stopped")
    await proc.ensure_ready()  # the next request starts it again
    assert proc.state is S.READY and proc.pid != pid


async def test_ready_detection_latency(make: Factory) -> None:
    """Ready is noticed shortly after the upstream starts listening (health answers 200)."""
    logs = LogBuffer()
    proc = make(logs=logs)
    seen: list[float] = []
    with logs.subscribe() as sub:

        async def watch() -> None:
            async for chunk in sub:
                if b"Listening on" in chunk:
                    seen.append(time.monotonic())
                    return

        watcher = asyncio.create_task(watch())
        await proc.ensure_ready()
        ready_at = time.monotonic()
        await asyncio.wait_for(watcher, 5)
    latency = ready_at - seen[0]
    print(f"ready detected {latency * 1000:.1f} ms after 'Listening'")
    assert latency < 0.25  # ~15 ms measured idle; headroom for a loaded CI machine


async def test_concurrent_ensure_and_stop_race(make: Factory) -> None:
    """Interleaved starts and stops never wedge the owner or leak a child."""
    logs = LogBuffer()
    proc = make(logs=logs)
    for _ in range(3):
        results = await asyncio.gather(
            proc.ensure_ready(), proc.stop(1.0), proc.ensure_ready(), return_exceptions=True
        )
        assert all(r is None or isinstance(r, StartAborted) for r in results), results
        assert proc.state in (S.READY, S.STOPPED)
    await proc.stop(1.0)
    assert proc.state is S.STOPPED and proc.pid is None
    for pid in re.findall(rb"My PID: (\d+)", logs.history()):
        await wait_until(lambda pid=pid: gone(int(pid)), message="every child gone")
