"""A model whose port another server holds fails with a clear 5xx, never reaching the impostor."""

from __future__ import annotations

from pathlib import Path

from llamaswap_proc import FAKE_CMD, llamaswap

from helpers import free_port, outside_server


def test_request_to_a_model_whose_port_is_taken_fails_naming_the_holder(tmp_path: Path) -> None:
    port = free_port()
    seen = tmp_path / "impostor.log"
    with outside_server(port, seen) as impostor:
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
            assert f"port {port}" in server.log()
        assert impostor.poll() is None  # the impostor was left alone
    requests = seen.read_text()
    assert "/v1/chat/completions" not in requests and "/health" not in requests, requests
