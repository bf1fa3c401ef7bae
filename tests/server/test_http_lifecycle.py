"""Process lifecycle of a real llamaswap: SIGKILL leaves no orphans, SIGHUP reloads, CLI.

Each test here runs its own llamaswap (they kill it, reload it, or never start it).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from llamaswap_proc import LlamaswapProcess, chat_body, fake_model, llamaswap

from helpers import pid_gone, wait_until_sync

ONE_MODEL = "models:\n" + fake_model("first")
TWO_MODELS = ONE_MODEL + fake_model("second")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


# -- 10. no orphans after SIGKILL -------------------------------------------------------------


def test_upstream_dies_with_a_killed_llamaswap(tmp_path: Path) -> None:
    server = LlamaswapProcess(tmp_path, ONE_MODEL).start()
    try:
        reply = server.chat("first")
        assert reply.status == 200, reply.text
        upstream = reply.json()["pid"]
        assert not pid_gone(upstream)
        server.send(signal.SIGKILL)
        assert server.proc is not None
        server.proc.wait(5)
        assert wait_until_sync(lambda: pid_gone(upstream), 5.0), "upstream orphaned"
        server.assert_no_orphans()
    finally:
        server.kill_hard()


# -- 11. the command line ---------------------------------------------------------------------

BAD_MATRIX = """models:
  a: {cmd: "x ${PORT}", proxy: "http://127.0.0.1:${PORT}"}
  b: {cmd: "x ${PORT}", proxy: "http://127.0.0.1:${PORT}"}
matrix:
  sets:
    pair: "a & ghost"
    odd: "a *"
"""
GOOD_MATRIX = BAD_MATRIX.replace('"a & ghost"', '"a & b"').replace('"a *"', '"a | b"')


def test_check_config_reports_yaml_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_MATRIX)
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "matrix.sets.pair" in result.stderr
    assert 'unknown var or model "ghost"' in result.stderr
    assert "matrix.sets.odd" in result.stderr
    assert "unexpected character '*'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_summarises_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_MATRIX)
    result = run_cli("check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "models (2)" in result.stdout
    assert "pair" in result.stdout


def test_schema_is_json_describing_models() -> None:
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "models" in schema["properties"]


def test_serve_needs_a_config() -> None:
    result = run_cli("--listen", "127.0.0.1:1")
    assert result.returncode != 0
    assert "at least one of --config or --config-dir must be provided" in result.stderr


def test_bad_config_at_startup_exits_1_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_MATRIX)
    result = run_cli("-config", str(bad), "-listen", "127.0.0.1:1")
    assert result.returncode == 1
    assert "matrix.sets.pair" in result.stderr
    assert "Traceback" not in result.stderr


def test_single_dash_flags_serve(tmp_path: Path) -> None:
    with llamaswap(tmp_path, ONE_MODEL, single_dash=True) as server:
        reply = server.chat("first")
        assert reply.status == 200, reply.text
        assert reply.json()["model"] == "first"


# -- 12. SIGHUP reload ------------------------------------------------------------------------


def test_sighup_keeps_old_config_when_broken_and_adopts_a_fixed_one(tmp_path: Path) -> None:
    with llamaswap(tmp_path, ONE_MODEL) as server:
        before = server.chat("first")
        assert before.status == 200
        assert server.chat("second").status == 404

        server.write_config(ONE_MODEL + "groups:\n  g:\n    members: [first, ghost]\n")
        server.send(signal.SIGHUP)
        assert wait_until_sync(lambda: "reload rejected" in server.log(), 5.0), server.log()
        still = server.chat("first")
        assert still.status == 200, still.text
        assert still.json()["pid"] == before.json()["pid"]  # the model was left running

        server.write_config(TWO_MODELS)
        server.send(signal.SIGHUP)

        def second_served() -> bool:
            try:
                return server.chat("second").status == 200
            except OSError:
                return False

        assert wait_until_sync(second_served, 10.0), server.log()
        # first kept running through the reload (unchanged); starting second evicted it.
        assert pid_gone(before.json()["pid"])
        assert server.chat("first").status == 200
        models = [m["id"] for m in server.call("GET", "/v1/models").json()["data"]]
        assert models == ["first", "second"]


# -- SIGTERM while a client is still streaming ------------------------------------------------


def test_sigterm_with_a_stream_in_flight_exits_promptly(tmp_path: Path) -> None:
    """Regression: shutdown waited for aiohttp's default 60 s drain before stopping models."""
    server = LlamaswapProcess(tmp_path, ONE_MODEL).start()
    assert server.proc is not None
    conn = http.client.HTTPConnection(f"127.0.0.1:{server.port}", timeout=30)
    try:
        body = json.dumps(chat_body("first", stream=True))
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions?chunks=100000&chunk_delay=20", body, headers)
        resp = conn.getresponse()
        first = json.loads(resp.readline().removeprefix(b"data: "))
        server.upstream_pids.add(first["pid"])
        began = time.monotonic()
        server.send(signal.SIGTERM)
        server.proc.wait(15)
        assert server.proc.returncode == 0, server.log()
        assert time.monotonic() - began < 10.0
        server.assert_no_orphans()
    finally:
        conn.close()
        server.kill_hard()


def test_sigterm_with_a_ttl_model_loaded_exits_promptly(tmp_path: Path) -> None:
    """Regression: shutdown used to wait out the whole ttl (asyncio.wait_for swallowed the
    cancel of the ttl timer), leaving the upstream running."""
    config = "models:\n" + fake_model("idle", "ttl: 300")
    with llamaswap(tmp_path, config) as server:
        assert server.chat("idle").status == 200
        began = time.monotonic()
        server.stop()  # SIGTERM; asserts exit 0 and no orphans
        assert time.monotonic() - began < 10


# -- malformed HTTP ----------------------------------------------------------------------------


def test_malformed_requests_get_400_and_log_no_traceback(tmp_path: Path) -> None:
    with llamaswap(tmp_path, ONE_MODEL) as server:
        for raw in (
            b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"BAD\x00LINE\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
                conn.sendall(raw)
                assert conn.recv(64).startswith(b"HTTP/1.0 400")
        assert server.chat("first").status == 200  # still serving
        assert wait_until_sync(lambda: '"POST /v1/chat/completions' in server.log(), 5)
        assert "Traceback" not in server.log()
        assert "BadHttpMessage" not in server.log()
