"""The fake `nvidia-smi` and the fake upstream's GPU memory and vLLM sleep mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import FAKE_UPSTREAM, free_port, install_fake_gpus, wait_until_sync
from llamaswap.observe.gpu import (
    MIB,
    NVIDIA_INFO_QUERY,
    NVIDIA_STATS_QUERY,
    nvidia_command,
    parse_nvidia_info,
    parse_nvidia_stats,
    run_tool,
)
from llamaswap.supervisor.gpus import detect_cards, measure_tree
from llamaswap.testing import fake_gpu
from llamaswap.testing.fake_upstream import parse_memory

APPS = [
    "nvidia-smi",
    "--query-compute-apps=gpu_uuid,pid,used_memory",
    "--format=csv,noheader,nounits",
]


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two fake GPUs (24 GiB, 12 GiB); the fake nvidia-smi first on PATH. The state path."""
    return install_fake_gpus(tmp_path, monkeypatch, [("Fake A", 24576), ("Fake B", 12288)])


def apps() -> list[list[str]]:
    out = run_tool(APPS)
    assert out is not None
    return [[f.strip() for f in line.split(",")] for line in out.splitlines()]


def test_observe_reads_the_fake_cards(gpus: Path) -> None:
    fake_gpu.register(os.getpid(), {1: 1000})
    stats = run_tool(nvidia_command(NVIDIA_STATS_QUERY))
    assert stats is not None
    readings = parse_nvidia_stats(stats)
    assert [(r.id, r.name) for r in readings] == [(0, "Fake A"), (1, "Fake B")]
    assert readings[0].mem_used_bytes == 0
    assert readings[1].mem_used_bytes == 1000 * MIB
    assert readings[1].mem_total_bytes == 12288 * MIB
    assert readings[1].vram_temp_c is None  # [N/A], as on real cards
    info = run_tool(nvidia_command(NVIDIA_INFO_QUERY))
    assert info is not None
    cards = parse_nvidia_info(info)
    assert [c.memory_bytes for c in cards] == [24576 * MIB, 12288 * MIB]
    assert cards[0].driver == fake_gpu.DRIVER_VERSION
    assert cards[0].uuid != cards[1].uuid


def test_compute_apps_per_pid_and_device(gpus: Path) -> None:
    uuid = {
        r.id: r.uuid for r in parse_nvidia_stats(run_tool(nvidia_command(NVIDIA_STATS_QUERY)) or "")
    }
    fake_gpu.register(os.getpid(), {0: 300, 1: 200})
    assert apps() == [[uuid[0], str(os.getpid()), "300"], [uuid[1], str(os.getpid()), "200"]]
    fake_gpu.register(os.getpid(), {1: 50})  # replaces the earlier usage
    assert apps() == [[uuid[1], str(os.getpid()), "50"]]
    fake_gpu.unregister(os.getpid())
    assert apps() == []


def test_header_and_units_like_the_real_tool(gpus: Path) -> None:
    fake_gpu.register(os.getpid(), {0: 300})
    out = run_tool(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv"])
    assert out == f"pid, used_memory [MiB]\n{os.getpid()}, 300 MiB\n"


def test_dead_processes_are_not_listed(gpus: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    fake_gpu.register(int(done.stdout), {0: 100})
    assert apps() == []


def test_unknown_field_fails_like_nvidia_smi(gpus: Path) -> None:
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,bogus", "--format=csv"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert 'Field "bogus" is not a valid field to query.' in done.stderr


def test_parse_memory_maps_visible_to_physical() -> None:
    assert parse_memory("8192", None) == {0: 8192}
    assert parse_memory("8192", "1") == {1: 8192}
    assert parse_memory("0:100,1:50", "2,3") == {2: 100, 3: 50}
    with pytest.raises(ValueError, match="--memory"):
        parse_memory("lots", None)


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def upstream(gpus: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1"}
    flags = ["--port", str(port), "--memory", "2048", "--sleep-delay", "0.05", "--silent"]
    proc = subprocess.Popen([*FAKE_UPSTREAM, *flags], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_sync(lambda: _healthy(base), 20)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _healthy(base: str) -> bool:
    try:
        return _get(base + "/health")[0] == 200
    except OSError:
        return False


def _usage(pid: int) -> list[str]:
    return [row[2] for row in apps() if row[1] == str(pid)]


def test_upstream_uses_memory_until_it_exits(upstream: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = upstream
    stats = parse_nvidia_stats(run_tool(nvidia_command(NVIDIA_STATS_QUERY)) or "")
    assert [r.mem_used_bytes for r in stats] == [0, 2048 * MIB]  # CUDA_VISIBLE_DEVICES=1
    assert _usage(proc.pid) == ["2048"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    assert fake_gpu.read_state()["apps"] == []


def test_upstream_sleeps_and_wakes_like_vllm(upstream: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = upstream
    assert json.loads(_get(base + "/is_sleeping")[1]) == {"is_sleeping": False}
    assert _get(base + "/sleep?level=1", "POST")[0] == 200
    assert json.loads(_get(base + "/is_sleeping")[1]) == {"is_sleeping": True}
    assert _usage(proc.pid) == []  # GPU memory freed, process still there
    assert proc.poll() is None
    status, body = _get(base + "/v1/chat/completions", "POST")
    assert status == 503 and b"sleeping" in body
    assert _get(base + "/wake_up", "POST")[0] == 200
    assert json.loads(_get(base + "/is_sleeping")[1]) == {"is_sleeping": False}
    assert _usage(proc.pid) == ["2048"]
    assert _get(base + "/v1/chat/completions", "POST")[0] == 200


def test_a_fake_rocm_smi_is_detected_and_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No nvidia-smi: the cards and a process tree's memory come from the fake rocm-smi."""
    monkeypatch.setenv("PATH", os.defpath)  # no real nvidia-smi or rocm-smi either
    install_fake_gpus(tmp_path, monkeypatch, [("Fake A", 24576), ("Fake B", 12288)], "rocm-smi")
    assert run_tool(nvidia_command(NVIDIA_INFO_QUERY)) is None
    cards = detect_cards()
    assert [(c.index, c.memory) for c in cards] == [(0, 24576 * MIB), (1, 12288 * MIB)]
    assert cards[0].uuid != cards[1].uuid
    fake_gpu.register(os.getpid(), {0: 300, 1: 200})
    pids = run_tool(["rocm-smi", "--showpids", "--json"])
    assert pids is not None
    assert json.loads(pids)["system"][f"PID{os.getpid()}"] == f"python, 2, {500 * MIB}, 0, 0"
    # rocm-smi gives one total per process: it is shared equally over its cards
    assert measure_tree(os.getpid(), {1: "small"}) == {"gpu0": 250 * MIB, "small": 250 * MIB}
    fake_gpu.register(os.getpid(), {1: 64})
    assert measure_tree(os.getpid(), {}) == {"gpu1": 64 * MIB}
    fake_gpu.unregister(os.getpid())
    assert measure_tree(os.getpid(), {}) == {}
    assert "No KFD PIDs currently running" in (run_tool(["rocm-smi", "--showpidgpus"]) or "")
