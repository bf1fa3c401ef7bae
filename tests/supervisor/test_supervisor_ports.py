"""Never forward to a server that is not ours: a taken port fails the start (issue 12, item 1).

An impostor (a fake upstream already listening on the model's port) answers the health
probe with 200; the model must fail to start with an error naming the port and the holder,
and the impostor must never see a request.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import FAKE_UPSTREAM, free_port, outside_server, port_listening, wait_until
from llamaswap.errors import StartError
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.supervisor.ports import confirm_owner, local_port
from llamaswap.supervisor.process import ProcessSpec, ProcessState, UpstreamProcess


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A fake upstream (not ours) listening on a port, logging every request to a file."""
    port = free_port()
    log = tmp_path / "impostor.log"
    with outside_server(port, log) as proc:
        yield proc, port, log


def _spec(cmd_port: int, proxy: str, timeout: float) -> ProcessSpec:
    return ProcessSpec(
        model_id="m1",
        cmd=" ".join([*FAKE_UPSTREAM, "--port", str(cmd_port)]),
        cmd_stop="",
        proxy=proxy,
        check_endpoint="/health",
        env=(),
        health_check_timeout=timeout,
    )


def test_local_port_only_for_loopback_hosts() -> None:
    assert local_port("http://127.0.0.1:5800").port == 5800  # type: ignore[union-attr]
    assert local_port("http://localhost:5801/v1").port == 5801  # type: ignore[union-attr]
    assert local_port("http://[::1]:5802").port == 5802  # type: ignore[union-attr]
    assert local_port("http://localhost").port == 80  # type: ignore[union-attr]
    assert local_port("http://10.1.2.3:5800") is None
    assert local_port("http://example.com:5800") is None
    assert local_port("http://127.0.0.1:notaport") is None


async def test_taken_port_fails_the_start_naming_port_and_holder(
    impostor: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    holder, port, out = impostor
    ours = free_port()  # the child would listen here, but the proxy points at the impostor
    spec = _spec(ours, f"http://127.0.0.1:{port}", 5.0)
    async with UpstreamProcess(spec, logs=LogBuffer()) as proc:
        with pytest.raises(StartError) as info:
            await proc.ensure_ready()
        message = str(info.value)
        assert f"port {port} is already in use" in message
        assert f"pid {holder.pid} (" in message
        assert proc.state is ProcessState.STOPPED and proc.pid is None  # never spawned
    assert b"/health" not in out.read_bytes()


def test_confirm_owner_refuses_a_listener_older_than_the_child(
    impostor: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    holder, port, _ = impostor
    where = local_port(f"http://127.0.0.1:{port}")
    assert where is not None
    # A child spawned just now that does not listen: what answers is the older impostor.
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            with pytest.raises(StartError, match=rf"port {port} was answered by pid {holder.pid}"):
                confirm_owner(where, child.pid, time.time())
            # The listener itself, or a helper created after the spawn, is accepted.
            confirm_owner(where, holder.pid, time.time())
            confirm_owner(where, child.pid, time.time() - 3600)
        finally:
            child.kill()


async def test_port_freed_by_a_stopped_child_is_reused() -> None:
    port = free_port()
    spec = _spec(port, f"http://localhost:{port}", 10.0)
    async with UpstreamProcess(spec, logs=LogBuffer()) as proc:
        for _ in range(2):  # the second start sees the first child's port (TIME_WAIT) as free
            await proc.ensure_ready()
            assert proc.state is ProcessState.READY
            await proc.stop(2.0)
            await wait_until(lambda: not port_listening(port), message="port released")


LATE_LISTENER = """
import http.server, os, sys, time
port, flag = int(sys.argv[1]), sys.argv[2]
while not os.path.exists(flag):  # started before the model, listens only once it runs
    time.sleep(0.005)
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""


async def test_a_listener_older_than_the_child_that_answers_health_fails_the_start(
    tmp_path: Path,
) -> None:
    port = free_port()
    flag = tmp_path / "spawned"
    older = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LATE_LISTENER, str(port), str(flag)
    )
    try:
        spec = ProcessSpec(
            model_id="m1",
            cmd=f'sh -c "touch {flag}; exec sleep 30"',  # never listens itself
            cmd_stop="",
            proxy=f"http://127.0.0.1:{port}",
            check_endpoint="/health",
            env=(),
            health_check_timeout=10.0,
        )
        async with UpstreamProcess(spec, logs=LogBuffer()) as proc:
            with pytest.raises(StartError) as info:
                await proc.ensure_ready()
            assert f"port {port} was answered by pid {older.pid}" in str(info.value)
            assert proc.state is ProcessState.STOPPED
    finally:
        older.kill()
        await older.wait()
