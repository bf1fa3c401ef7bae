"""Placement inputs from config, and the host-memory plan for sleeping models."""

from __future__ import annotations

from llamaswap.config.model import ModelConfig
from llamaswap.config.resources import DeviceConfig, ResourcesConfig
from llamaswap.swap.memory import (
    Sleeper,
    device_capacities,
    host_plan,
    need_for,
    resident_usage,
)
from llamaswap.swap.placement import Need

G = 1024**3


def test_need_from_declared_resources_or_estimate() -> None:
    one = ModelConfig(resources=ResourcesConfig(memory="4GiB", devices=["gpu1"]))
    split = ModelConfig(resources=ResourcesConfig(memory={"gpu0": "1GiB", "gpu1": 2 * G}))
    assert need_for(one) == Need(4 * G, ("gpu1",))
    assert need_for(split) == Need({"gpu0": G, "gpu1": 2 * G})
    assert need_for(one, estimate=9) == Need(4 * G, ("gpu1",))  # declared wins
    assert need_for(ModelConfig(), estimate=3 * G) == Need(3 * G)
    assert need_for(ModelConfig()) is None


def test_capacities_declared_or_detected() -> None:
    declared = {"a": DeviceConfig(memory="24GiB"), "b": DeviceConfig(memory=G)}
    assert device_capacities(declared, [(0, 5)]) == {"a": 24 * G, "b": G}
    assert device_capacities({}, [(0, 24 * G), (1, 12 * G)]) == {"gpu0": 24 * G, "gpu1": 12 * G}
    assert device_capacities({}) == {}


def test_resident_usage_takes_the_larger() -> None:
    assert resident_usage({"gpu0": 10 * G}, {"gpu0": 11 * G, "gpu1": G}) == {
        "gpu0": 11 * G,
        "gpu1": G,
    }
    assert resident_usage({"gpu0": 10 * G}, {}) == {"gpu0": 10 * G}


def test_host_plan_stops_the_cheapest_sleepers() -> None:
    asleep = [Sleeper("a", 8 * G, cost=5), Sleeper("b", 6 * G, cost=1), Sleeper("c", 4 * G, 0.5)]
    assert host_plan(None, asleep, 100 * G) == ()
    assert host_plan(20 * G, asleep, 2 * G) == ()  # 18 + 2 fits
    assert host_plan(20 * G, asleep, 6 * G) == ("c",)  # 4 GiB short: c alone is cheapest
    assert host_plan(20 * G, asleep, 10 * G) == ("b", "c")
    assert host_plan(20 * G, asleep, 21 * G) is None  # never fits: stop it instead
