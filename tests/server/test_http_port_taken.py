"""A model whose port another server holds fails with a clear 5xx, never reaching the impostor."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from llamaswap_proc import FAKE_CMD, llamaswap

from helpers import FAKE_UPSTREAM, free_port, wait_until_sync


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_request_to_a_model_whose_port_is_taken_fails_naming_the_holder(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "impostor.log"
    with out.open("wb") as sink:
        impostor = subprocess.Popen(
            [*FAKE_UPSTREAM, "--port", str(port), "--model", "impostor"], stdout=sink
        )
    try:
        assert wait_until_sync(lambda: _listening(port), 10.0)
        config = (
            "models:\n"
            "  victim:\n"
            f"    cmd: {FAKE_CMD} --port {port} --model victim\n"
            f"    proxy: http://127.0.0.1:{port}\n"
        )
        with llamaswap(tmp_path, config) as server:
            reply = server.chat("victim")
            assert 500 <= reply.status < 600, reply.text
            message = reply.json()["error"]["message"]
            assert f"port {port} is already in use" in message
            assert f"pid {impostor.pid}" in message
            assert "victim" not in server.running_models()
            assert "port" in server.log() and str(impostor.pid) in server.log()
        assert impostor.poll() is None  # the impostor was left alone
        seen = out.read_text()
        assert "/v1/chat/completions" not in seen and "/health" not in seen, seen
    finally:
        impostor.kill()
        impostor.wait()
