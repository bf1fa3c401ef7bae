"""Scheduling as a client sees it on a real llamaswap: a full queue answers 429 with
Retry-After, a crash-looping model backs off with a fast 503, and /running shows both."""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from llamaswap_proc import FAKE_CMD, SERVING_PATHS, Reply, chat_body, fake_model, llamaswap

from helpers import wait_until_sync

CRASHING_CMD = f"{sys.executable} -c \"print('cannot open weights.gguf'); raise SystemExit(3)\""


@pytest.mark.parametrize("fast_path", SERVING_PATHS)
def test_a_full_queue_answers_429_with_retry_after_and_keeps_the_rest(
    tmp_path: Path, fast_path: bool
) -> None:
    config = "models:\n" + fake_model("slow", "maxQueue: 2", flags="--startup-delay 1.5")
    with llamaswap(tmp_path, config, fast_path=fast_path) as server:
        replies: list[Reply] = []
        clients = [
            threading.Thread(target=lambda: replies.append(server.chat("slow"))) for _ in range(2)
        ]
        for client in clients:
            client.start()
        assert wait_until_sync(lambda: any(e.get("queued") == 2 for e in server.running()), 10.0), (
            server.running()
        )
        refused = server.call("POST", "/v1/chat/completions", chat_body("slow"))
        assert refused.status == 429
        assert refused.headers["Retry-After"] is not None
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "queue_full"
        assert "2 requests already wait for model slow" in error["message"]
        for client in clients:
            client.join(20)
        assert [r.status for r in replies] == [200, 200]
        (entry,) = server.running()
        assert (entry["inFlight"], entry["queued"], entry["backoff"]) == (0, 0, None)
        assert entry["loadTimeS"] is not None and entry["loadTimeS"] >= 1.0


@pytest.mark.parametrize("fast_path", SERVING_PATHS)
def test_a_crash_looping_model_backs_off_with_a_fast_clear_503(
    tmp_path: Path, fast_path: bool
) -> None:
    config = (
        "routing:\n  scheduler:\n    backoff: {after: 2, initial: 60s}\n"
        "models:\n"
        f"  broken:\n    cmd: {CRASHING_CMD} ${{PORT}}\n    proxy: http://127.0.0.1:${{PORT}}\n"
        f"  fine:\n    cmd: {FAKE_CMD} --port ${{PORT}} --model fine\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    with llamaswap(tmp_path, config, fast_path=fast_path) as server:
        for _ in range(2):
            failed = server.call("POST", "/v1/chat/completions", chat_body("broken"))
            assert failed.status >= 500
        started = time.monotonic()
        refused = server.call("POST", "/v1/chat/completions", chat_body("broken"))
        elapsed = time.monotonic() - started
        assert refused.status == 503
        message = refused.json()["error"]["message"]
        assert "model broken failed to start 2 times in a row" in message
        assert "next attempt in 60s" in message or "next attempt in 59s" in message
        assert "exit code 3" in message and "cannot open weights.gguf" in message
        assert elapsed < 2.0  # refused at once, no restart attempted
        (entry,) = [e for e in server.running() if e["model"] == "broken"]
        assert entry["state"] == "stopped"
        assert entry["backoff"]["failures"] == 2
        assert 0 < entry["backoff"]["retryInS"] <= 60
        # Other models are served as usual.
        assert server.chat("fine").status == 200


def load_seconds(metrics: str, model: str) -> float | None:
    prefix = f'llamaswap_model_load_seconds{{model="{model}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


def test_learned_load_times_survive_a_restart_when_the_store_is_a_file(tmp_path: Path) -> None:
    config = (
        f"store:\n  path: {tmp_path / 'store.db'}\n"
        + "models:\n"
        + fake_model("slow", flags="--startup-delay 0.5")
    )
    with llamaswap(tmp_path, config) as server:
        assert load_seconds(server.call("GET", "/metrics").text, "slow") is None
        assert server.chat("slow").status == 200
        learned = load_seconds(server.call("GET", "/metrics").text, "slow")
        assert learned is not None and learned >= 0.5
    with llamaswap(tmp_path, config) as server:
        # Nothing has started in this run, yet the scheduler knows what a load costs.
        assert load_seconds(server.call("GET", "/metrics").text, "slow") == learned


def test_learned_load_times_follow_a_reload_to_a_new_store_file(tmp_path: Path) -> None:
    models = "models:\n" + fake_model("slow", flags="--startup-delay 0.3")
    with llamaswap(tmp_path, f"store:\n  path: {tmp_path / 'a.db'}\n" + models) as server:
        assert server.chat("slow").status == 200
        server.write_config(f"store:\n  path: {tmp_path / 'b.db'}\n" + models)
        server.send(signal.SIGHUP)
        assert wait_until_sync(lambda: "config reloaded" in server.log(), 10.0), server.log()
        server.unload_all()
        assert server.chat("slow").status == 200
    with sqlite3.connect(tmp_path / "b.db") as db:
        rows = db.execute("SELECT model, samples FROM llamaswap_load_times").fetchall()
    assert rows == [("slow", 2)]  # learned from both loads, saved where the store now is
