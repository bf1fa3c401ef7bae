"""`${GPU}` and the visibility variables given to a placed model."""

from __future__ import annotations

from llamaswap.supervisor.devices import device_env, substitute_gpu


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
