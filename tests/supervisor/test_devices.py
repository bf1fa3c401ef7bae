"""`${GPU}` and the visibility variables given to a placed model."""

from __future__ import annotations

from dataclasses import replace

from llamaswap.config.resources import DeviceConfig
from llamaswap.supervisor import ProcessSpec
from llamaswap.supervisor.devices import device_env, runtime_indices, substitute_gpu


def test_substitute_gpu() -> None:
    assert substitute_gpu("s --device ${GPU} -x ${GPU}", [0, 2]) == "s --device 0,2 -x 0,2"
    assert substitute_gpu("s ${GPU}", []) == "s "


def test_visibility_set_unless_the_model_sets_it() -> None:
    assert device_env(["A=1"], [1]) == ["A=1", "CUDA_VISIBLE_DEVICES=1", "HIP_VISIBLE_DEVICES=1"]
    assert device_env(["CUDA_VISIBLE_DEVICES=3", "B=${GPU}"], [0, 1]) == [
        "CUDA_VISIBLE_DEVICES=3",
        "B=0,1",
        "HIP_VISIBLE_DEVICES=0,1",
    ]


def test_unplaced_model_gets_no_visibility_variables() -> None:
    assert device_env(["B=${GPU}"], None) == ["B="]


def test_runtime_indices_of_declared_and_detected_devices() -> None:
    declared = {"big": DeviceConfig(memory=1, index=3), "gpu1": DeviceConfig(memory=1)}
    assert runtime_indices(declared, ["big", "gpu1", "gpu2"]) == (3, 1, 2)


def test_a_spec_fills_gpu_in_cmd_and_env_only_when_placed() -> None:
    spec = ProcessSpec("m", "srv --dev ${GPU}", "", "http://x", "none", ("D=${GPU}",), 1.0)
    assert (spec.command(), spec.environment()) == ("srv --dev ", ("D=",))
    placed = replace(spec, gpus=(0, 1))
    assert placed.command() == "srv --dev 0,1"
    assert placed.environment() == ("D=0,1", "CUDA_VISIBLE_DEVICES=0,1", "HIP_VISIBLE_DEVICES=0,1")
