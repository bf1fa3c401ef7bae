"""Measured GPU usage of a model's process tree, and the warning when it exceeds the declared."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import FAKE_UPSTREAM, free_port, install_fake_gpus, wait_until_sync
from llamaswap.observe.gpu import (
    MIB,
    NVIDIA_STATS_QUERY,
    nvidia_command,
    parse_nvidia_stats,
    run_tool,
)
from llamaswap.observe.gpu_usage import (
    ProcessUsage,
    check_declared,
    device_by_uuid,
    measured_usage,
    parse_compute_apps,
    parse_rocm_pid_gpus,
    parse_rocm_pids,
    process_tree,
    read_compute_apps,
    rocm_key,
    rocm_usage,
)

G = 1024**3


def test_parse_compute_apps_skips_what_it_cannot_read() -> None:
    text = "GPU-a, 10, 512\nGPU-b, 11, [N/A]\nwarning: something\nGPU-b, 12, 1024\n"
    assert parse_compute_apps(text) == [
        ProcessUsage(10, "GPU-a", 512 * MIB),
        ProcessUsage(12, "GPU-b", 1024 * MIB),
    ]


def test_usage_sums_the_process_tree_per_device() -> None:
    apps = [
        ProcessUsage(10, "U0", 1 * G),
        ProcessUsage(11, "U1", 2 * G),
        ProcessUsage(11, "U0", G // 2),
        ProcessUsage(99, "U0", 5 * G),  # another model
        ProcessUsage(12, "U9", G),  # a card the config does not name
    ]
    names = device_by_uuid([(0, "U0"), (1, "U1"), (2, "")], {0: "big", 1: "small"})
    assert names == {"U0": "big", "U1": "small"}
    assert device_by_uuid([(3, "U3")], {}) == {"U3": "gpu3"}
    assert measured_usage(apps, {10, 11, 12}, names) == {"big": 3 * G // 2, "small": 2 * G, "U9": G}
    assert measured_usage(apps, set(), names) == {}


def test_using_more_than_declared_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llamaswap.observe"):
        over = check_declared("m", {"gpu0": 10 * G}, {"gpu0": 11 * G, "gpu1": G})
        assert check_declared("ok", {"gpu0": 10 * G}, {"gpu0": 9 * G}) == {}
    assert over == {"gpu0": (11 * G, 10 * G), "gpu1": (G, 0)}
    assert [r.getMessage() for r in caplog.records] == [
        "model m uses 11264 MiB on gpu0, more than the 10240 MiB it declares in "
        "resources.memory; placement counts the measured value",
        "model m uses 1024 MiB on gpu1, more than the 0 MiB it declares in resources.memory; "
        "placement counts the measured value",
    ]


def test_no_nvidia_smi_means_no_reading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_compute_apps() is None


def test_a_running_upstream_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake A", 24576), ("Fake B", 12288)])
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1"}
    argv = [*FAKE_UPSTREAM, "--port", str(port), "--memory", "1536", "--fork-child", "--silent"]
    proc = subprocess.Popen(argv, env=env)
    try:
        assert wait_until_sync(lambda: bool(read_compute_apps()), 20)
        tree = process_tree(proc.pid)
        assert proc.pid in tree and len(tree) == 2  # the upstream and its child
        stats = parse_nvidia_stats(run_tool(nvidia_command(NVIDIA_STATS_QUERY)) or "")
        names = device_by_uuid(((r.id, r.uuid) for r in stats), {0: "gpu0", 1: "gpu1"})
        measured = measured_usage(read_compute_apps() or [], tree, names)
        assert measured == {"gpu1": 1536 * MIB}
        with caplog.at_level(logging.WARNING, logger="llamaswap.observe"):
            assert check_declared("m", {"gpu1": G}, measured) == {"gpu1": (1536 * MIB, G)}
        assert "model m uses 1536 MiB on gpu1" in caplog.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert process_tree(proc.pid) == set()
    assert read_compute_apps() == []


# rocm-smi: the shapes of ROCm's rocm_smi.py (print2DArray under --json, printListLog as text)
ROCM_PIDS = (
    '{"system": {"PID4242": "python3, 1, 2147483648, 0, 0", '
    '"PID77": "vllm, worker, 2, 3221225472, 0, 0", "PID9": "ghost, 1, unknown, 0, 0", '
    '"Driver version": "6.8.5"}}'
)
ROCM_PID_GPUS = (
    "============================ ROCm System Management Interface ============================\n"
    "================================== GPUs Indexed by PID ===================================\n"
    "PID 4242 is using 1 DRM device(s):\n"
    "1 \n"
    "PID 77 is using 2 DRM device(s):\n"
    "0 1 \n"
    "PID 5 is using 0 DRM device(s)\n"
    "==========================================================================================\n"
)


def test_parse_rocm_pids_reads_vram_per_process() -> None:
    # a name with a comma keeps its numbers (they are the last four fields); unknown VRAM
    # and keys that are no pid are skipped
    assert parse_rocm_pids(ROCM_PIDS) == {4242: 2 * G, 77: 3 * G}
    assert parse_rocm_pids("{}") == {}
    assert parse_rocm_pids("not json") == {}


def test_parse_rocm_pid_gpus_reads_the_cards_of_each_process() -> None:
    assert parse_rocm_pid_gpus(ROCM_PID_GPUS) == {4242: [1], 77: [0, 1], 5: []}
    assert parse_rocm_pid_gpus("No KFD PIDs currently running\n") == {}


def test_rocm_usage_shares_a_process_total_over_its_cards() -> None:
    apps = rocm_usage({4242: 2 * G, 77: 3 * G, 5: G}, {4242: [1], 77: [0, 1]})
    assert apps == [
        ProcessUsage(77, rocm_key(0), 3 * G // 2),
        ProcessUsage(77, rocm_key(1), 3 * G // 2),
        ProcessUsage(4242, rocm_key(1), 2 * G),
    ]
    names = device_by_uuid([(0, rocm_key(0)), (1, rocm_key(1))], {1: "small"})
    assert measured_usage(apps, {77, 4242}, names) == {"gpu0": 3 * G // 2, "small": 7 * G // 2}
