"""`llamaswap cluster` as a user runs it on one machine: a local Ray, one node, Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from helpers import free_port, free_port_block, wait_until_sync

pytest.importorskip("ray")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

SERVING = "llamaswap cluster serving 1 models"
FAKE = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"


def get(port: int, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def healthy(port: int) -> bool:
    try:
        return get(port, "GET", "/health")[0] == 200 and get(port, "GET", "/running")[0] == 200
    except OSError:
        return False


def test_the_cluster_command_serves_on_a_local_ray_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "models:\n"
        "  solo:\n"
        f"    cmd: {FAKE} --port ${{PORT}} --model ${{MODEL_ID}}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
        f"startPort: {free_port_block(5)}\n"
        "cluster:\n  nodes:\n    here: {resources: {here: 1}}\n"
    )
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llamaswap",
                "cluster",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        assert wait_until_sync(lambda: SERVING in log.read_text(errors="replace"), timeout=90)
        assert healthy(port)
        status, body = get(port, "POST", "/v1/chat/completions", {"model": "solo", "messages": []})
        assert status == 200, body
        upstream = json.loads(body)["pid"]
        running = json.loads(get(port, "GET", "/running")[1])["running"]
        assert [(e["model"], e["node"]) for e in running] == [("solo", "here")]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
        assert wait_until_sync(lambda: not psutil.pid_exists(upstream), timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "tearing the cluster application down" in log.read_text(errors="replace")


def test_a_config_without_a_cluster_section_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "plain.yaml"
    config.write_text("models: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "llamaswap", "cluster", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no `cluster.nodes` section" in done.stderr
