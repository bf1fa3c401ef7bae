"""Device memory in `/running` and `/api/events`: per device its models (ready, asleep) with
declared vs measured bytes, the over-declared flag, host memory for sleeping models (the
machine's RAM when `hostMemory` is not written) and why the last evictions happened.
Through a real llamaswap, fake GPUs (a fake `nvidia-smi`) and fake upstreams."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from llamaswap_proc import LlamaswapProcess, fake_model, llamaswap, memory_model

from helpers import install_fake_gpus, wait_until_sync

GIB = 1024**3
GIB_MIB = 1024


def memory(server: LlamaswapProcess) -> dict[str, Any]:
    reply = server.call("GET", "/running")
    assert reply.status == 200, reply.text
    view: dict[str, Any] = reply.json()["memory"]
    return view


def on_device(server: LlamaswapProcess, device: str = "gpu0") -> dict[str, dict[str, Any]]:
    """model -> its entry on `device` in /running's memory view."""
    for d in memory(server)["devices"]:
        if d["name"] == device:
            return {m["model"]: m for m in d["models"]}
    raise AssertionError(f"no device {device}")


def chat(server: LlamaswapProcess, model: str) -> None:
    reply = server.chat(model)
    assert reply.status == 200, reply.text


def first_memory_event(server: LlamaswapProcess) -> dict[str, Any]:
    """The `memory` frame among the first frames of /api/events."""
    with urllib.request.urlopen(f"{server.base}/api/events", timeout=10) as events:
        for raw in events:
            line = raw.decode()
            if line.startswith("data:"):
                outer = json.loads(line[5:])
                if outer["type"] == "memory":
                    data: dict[str, Any] = json.loads(outer["data"])
                    return data
    raise AssertionError("no memory frame")


def test_running_and_events_show_device_memory_and_why_models_were_evicted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "models:\n"
        + memory_model("greedy", 10, 20)  # says 10 GiB, holds 20
        + memory_model("sleepy", 14, 14, "sleep: vllm", flags="--sleep-delay 0.1")
        + memory_model("other", 12, 12)
    )
    with llamaswap(tmp_path, config) as server:
        view = memory(server)
        assert view["devices"] == [
            {
                "name": "gpu0",
                "capacityBytes": 24 * GIB,
                "usedBytes": 0,
                "freeBytes": 24 * GIB,
                "models": [],
            }
        ]
        assert view["evictions"] == []
        assert view["hostMemory"] == {
            "capacityBytes": psutil.virtual_memory().total,  # not written: the machine's RAM
            "detected": True,
            "asleepBytes": 0,
            "asleep": [],
        }

        chat(server, "greedy")
        assert wait_until_sync(
            lambda: on_device(server).get("greedy", {}).get("measuredBytes") == 20 * GIB, 10.0
        ), memory(server)
        assert on_device(server)["greedy"] == {
            "model": "greedy",
            "state": "ready",
            "declaredBytes": 10 * GIB,
            "declaredFrom": "resources",
            "measuredBytes": 20 * GIB,
            "countedBytes": 20 * GIB,
            "overDeclared": True,
            "heldBytes": 20 * GIB,
        }
        gpu0 = memory(server)["devices"][0]
        assert (gpu0["usedBytes"], gpu0["freeBytes"]) == (20 * GIB, 4 * GIB)

        chat(server, "other")  # 20 + 12 > 24: greedy goes, though its declared 10 would fit
        (record,) = memory(server)["evictions"]
        assert record["target"] == "other"
        assert (record["stopped"], record["slept"], record["by"]) == (["greedy"], [], "memory")
        assert record["devices"] == [
            {
                "name": "gpu0",
                "capacityBytes": 24 * GIB,
                "neededBytes": 12 * GIB,
                "freeBytes": 4 * GIB,
            }
        ]
        assert record["ago_s"] >= 0 and record["at"] > 0

        chat(server, "sleepy")  # 12 + 14 > 24: other is stopped (it cannot sleep)
        chat(server, "other")  # 14 + 12 > 24: sleepy is put to sleep
        assert wait_until_sync(
            lambda: on_device(server).get("sleepy", {}).get("state") == "asleep", 5.0
        )
        models = on_device(server)
        assert models["sleepy"]["heldBytes"] == 0  # asleep: its device memory is free
        assert models["sleepy"]["countedBytes"] == 14 * GIB  # what waking it needs back
        assert models["sleepy"]["overDeclared"] is False
        # measured while awake, or not at all if it was sent to sleep before the reading came
        assert models["sleepy"]["measuredBytes"] in (None, 14 * GIB)
        assert models["other"]["state"] == "ready"
        view = memory(server)
        assert view["devices"][0]["usedBytes"] == 12 * GIB
        assert view["hostMemory"]["asleep"] == ["sleepy"]
        assert view["hostMemory"]["asleepBytes"] == 14 * GIB
        last = view["evictions"][-1]
        assert (last["target"], last["stopped"], last["slept"]) == ("other", [], ["sleepy"])
        assert [e["target"] for e in view["evictions"]] == ["other", "sleepy", "other"]

        event = first_memory_event(server)
        assert event["devices"] == view["devices"]
        assert [e["target"] for e in event["evictions"]] == ["other", "sleepy", "other"]


def test_a_sleeper_larger_than_the_machine_ram_is_stopped_when_host_memory_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `hostMemory`, the budget of sleeping models is the detected RAM: a model that
    would hold more than that asleep is stopped instead (with `hostMemory` written larger,
    it sleeps: tests/server/test_swap_by_memory.py)."""
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    too_big = psutil.virtual_memory().total // GIB + 1
    config = (
        "devices: {gpu0: {memory: 24GiB}}\n"
        "models:\n"
        + fake_model(
            "vast",
            f"resources: {{memory: 14GiB, hostMemory: {too_big}GiB}}",
            "sleep: vllm",
            flags=f"--memory {14 * GIB_MIB}",
        )
        + memory_model("other", 14, 14)
    )
    with llamaswap(tmp_path, config) as server:
        chat(server, "vast")
        chat(server, "other")
        assert {e["model"]: e["state"] for e in server.running()} == {"other": "ready"}
        (record,) = memory(server)["evictions"]
        assert (record["stopped"], record["slept"]) == (["vast"], [])


def test_amd_cards_are_detected_and_measured_through_rocm_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.defpath)  # no nvidia-smi: rocm-smi answers
    install_fake_gpus(tmp_path, monkeypatch, [("Fake MI", 16 * GIB_MIB)], "rocm-smi")
    config = "models:\n" + memory_model("greedy", 4, 6) + memory_model("fits", 4, 4)
    with llamaswap(tmp_path, config) as server:
        chat(server, "greedy")
        assert wait_until_sync(
            lambda: on_device(server).get("greedy", {}).get("measuredBytes") == 6 * GIB, 10.0
        ), memory(server)
        entry = on_device(server)["greedy"]
        assert (entry["declaredBytes"], entry["overDeclared"]) == (4 * GIB, True)
        assert memory(server)["devices"][0]["capacityBytes"] == 16 * GIB
        assert "placing models on detected devices: gpu0 16GiB" in server.log()
        assert "model greedy uses 6144 MiB on gpu0, more than the 4096 MiB" in server.log()
        env = server.call("GET", "/upstream/greedy/env").text.splitlines()
        assert "HIP_VISIBLE_DEVICES=0" in env
