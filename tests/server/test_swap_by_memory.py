"""Placement by memory through a real llamaswap, fake GPUs (a fake `nvidia-smi`) and fake
upstreams that "use" GPU memory: co-residence, the cheapest eviction, the chosen device
reaching the process, measured usage, and a model that can never fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from llamaswap_proc import LlamaswapProcess, fake_model, llamaswap, memory_model

from helpers import install_fake_gpus, tiny_gguf, wait_until_sync
from llamaswap.testing import fake_gpu

GIB_MIB = 1024


def run_dir(tmp_path: Path) -> Path:
    where = tmp_path / "run"
    where.mkdir()
    return where


def ready_models(server: LlamaswapProcess) -> list[str]:
    return sorted(e["model"] for e in server.running() if e["state"] == "ready")


def fake_gpu_users(state: Path) -> dict[int, int]:
    """pid -> MiB registered on the fake GPUs (live or not)."""
    return {int(a["pid"]): int(a["used_mib"]) for a in fake_gpu.read_state(state)["apps"]}


def chat_pid(server: LlamaswapProcess, model: str) -> int:
    reply = server.chat(model)
    assert reply.status == 200, reply.text
    pid: int = reply.json()["pid"]
    return pid


def test_two_models_co_reside_and_a_third_evicts_the_cheapest_idle_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "models:\n"
        # `a` is slow to load: evicting it would cost more than evicting `b`.
        + memory_model("a", 10, 10, flags="--startup-delay 1.0")
        + memory_model("b", 10, 10)
        + memory_model("c", 10, 10)
    )
    with llamaswap(run_dir(tmp_path), config) as server:
        pid_a = chat_pid(server, "a")
        pid_b = chat_pid(server, "b")
        assert ready_models(server) == ["a", "b"]  # 10 + 10 GiB fit on 24 GiB
        assert chat_pid(server, "a") == pid_a  # still the same process: nothing swapped
        used = fake_gpu_users(state)
        assert used[pid_a] == used[pid_b] == 10 * GIB_MIB
        pid_c = chat_pid(server, "c")
        assert ready_models(server) == ["a", "c"], server.log()
        assert wait_until_sync(lambda: pid_b not in fake_gpu_users(state), 5.0)
        assert chat_pid(server, "a") == pid_a
        assert pid_c in fake_gpu_users(state)


def test_the_chosen_device_reaches_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Big", 24 * GIB_MIB), ("Small", 12 * GIB_MIB)])
    config = (
        "devices: {gpu0: {memory: 24GiB}, gpu1: {memory: 12GiB}}\n"
        "models:\n"
        # 8 GiB fits best on gpu1 (index 1); the cmd names it through ${GPU}.
        + memory_model("small", 8, 8, flags="--respond on-gpu-${GPU}")
        + memory_model("pinned", 8, 8, "env: [CUDA_VISIBLE_DEVICES=5]")
    )
    with llamaswap(run_dir(tmp_path), config) as server:
        reply = server.chat("small")
        assert reply.status == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "on-gpu-1"
        env = server.call("GET", "/upstream/small/env").text.splitlines()
        assert "CUDA_VISIBLE_DEVICES=1" in env and "HIP_VISIBLE_DEVICES=1" in env
        env = server.call("GET", "/upstream/pinned/env").text.splitlines()
        assert "CUDA_VISIBLE_DEVICES=5" in env  # the model's own env wins
        assert "HIP_VISIBLE_DEVICES=0" in env  # placed on gpu0: gpu1 is 8 GiB full


def test_measured_usage_above_the_declared_is_warned_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "models:\n"
        + memory_model("greedy", 10, 20)  # says 10 GiB, holds 20
        + memory_model("other", 10, 10)
    )
    with llamaswap(run_dir(tmp_path), config) as server:
        chat_pid(server, "greedy")
        warning = "model greedy uses 20480 MiB on gpu0, more than the 10240 MiB it declares"
        assert wait_until_sync(lambda: warning in server.log(), 10.0), server.log()
        chat_pid(server, "other")  # 20 + 10 > 24: greedy must go, though 10 + 10 would fit
        assert ready_models(server) == ["other"], server.log()


def test_detected_devices_and_a_model_that_can_never_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    config = "models:\n" + memory_model("huge", 30, 1) + memory_model("fits", 10, 10)
    with llamaswap(run_dir(tmp_path), config) as server:
        reply = server.chat("huge")
        assert reply.status == 503, reply.text
        message = reply.json()["error"]["message"]
        assert "model huge can never fit" in message
        assert "30GiB" in message and "gpu0 has 24GiB" in message
        assert ready_models(server) == []
        reply = server.chat("fits")
        assert reply.status == 200, reply.text
        env = server.call("GET", "/upstream/fits/env").text.splitlines()
        assert "CUDA_VISIBLE_DEVICES=0" in env
        assert "placing models on detected devices: gpu0 24GiB" in server.log()


def test_models_without_resources_are_placed_by_their_gguf_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 8 * GIB_MIB)])
    models = ""
    for name in ("e1", "e2", "e3"):
        gguf = tiny_gguf(tmp_path / f"{name}.gguf", 3 * 1024**3)  # ~3 GiB estimated each
        models += fake_model(name, flags=f"--model {gguf}")
    with llamaswap(
        run_dir(tmp_path), "devices: {gpu0: {memory: 8GiB}}\nmodels:\n" + models
    ) as server:
        chat_pid(server, "e1")
        chat_pid(server, "e2")
        assert ready_models(server) == ["e1", "e2"]  # 3 + 3 GiB fit in 8
        chat_pid(server, "e3")  # 9 GiB would not: one goes
        assert len(ready_models(server)) == 2 and "e3" in ready_models(server)
        assert "e1: estimated 3.001GiB from" in server.log()


def test_a_llama_swap_config_on_a_gpu_machine_keeps_one_model_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `devices`, no `resources`: GGUF estimates are not used, as llama-swap would not."""
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    models = ""
    for name in ("e1", "e2"):
        gguf = tiny_gguf(tmp_path / f"{name}.gguf", 1024**3)  # both would fit in 24 GiB
        models += fake_model(name, flags=f"--model {gguf}")
    with llamaswap(run_dir(tmp_path), "models:\n" + models) as server:
        chat_pid(server, "e1")
        chat_pid(server, "e2")
        assert ready_models(server) == ["e2"]
        assert "estimated" not in server.log()


def states(server: LlamaswapProcess) -> dict[str, str]:
    return {e["model"]: e["state"] for e in server.running()}


def test_a_model_with_a_sleep_tier_sleeps_instead_of_stopping_and_wakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "hostMemory: 64GiB\n"
        "models:\n"
        + memory_model("vllm", 14, 14, "sleep: vllm", flags="--sleep-delay 0.2")
        + memory_model("other", 14, 14)
    )
    with llamaswap(run_dir(tmp_path), config) as server:
        pid = chat_pid(server, "vllm")
        pid_other = chat_pid(server, "other")  # 14 + 14 > 24: vllm must make room
        assert states(server) == {"vllm": "asleep", "other": "ready"}, server.log()
        assert pid not in fake_gpu_users(state)  # its device memory is free ...
        assert chat_pid(server, "vllm") == pid  # ... and the same process serves again
        assert states(server) == {"vllm": "ready"}, server.log()
        assert fake_gpu_users(state) == {pid: 14 * GIB_MIB}
        assert wait_until_sync(lambda: pid_other not in fake_gpu_users(state), 5.0)
        assert "wake of vllm (evicted other)" in server.log()
        assert "swap to other (evicted vllm (asleep))" in server.log()


def test_a_model_that_does_not_fall_asleep_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    # The fake answers 200 to an unknown route, but its status says it is still awake.
    endpoints = '{sleep: "POST /nope", wake: "POST /wake_up", status: "GET /is_sleeping"}'
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "models:\n"
        + memory_model("stubborn", 14, 14, f"sleep: {endpoints}")
        + memory_model("other", 14, 14)
    )
    with llamaswap(run_dir(tmp_path), config) as server:
        chat_pid(server, "stubborn")
        chat_pid(server, "other")
        assert states(server) == {"other": "ready"}, server.log()
        assert "could not put stubborn to sleep" in server.log()


def test_the_placement_example_runs_on_fake_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/placement.yaml as its header says to run it: two fake GPUs, every model."""
    state = install_fake_gpus(
        tmp_path, monkeypatch, [("Fake 24G", 24 * GIB_MIB), ("Fake 12G", 12 * GIB_MIB)]
    )
    example = Path(__file__).resolve().parents[2] / "examples" / "placement.yaml"
    with llamaswap(run_dir(tmp_path), example.read_text()) as server:
        models = [e["id"] for e in server.call("GET", "/v1/models").json()["data"]]
        assert len(models) >= 5
        for model in models:
            chat_pid(server, model)
        assert fake_gpu_users(state), "no fake server reported device memory"
        assert sum(fake_gpu_users(state).values()) <= 36 * GIB_MIB
