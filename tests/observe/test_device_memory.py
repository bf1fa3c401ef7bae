"""The eviction record and the over-declared check (pure)."""

from __future__ import annotations

from llamaswap.observe.device_memory import eviction_record, over_declared

G = 1024**3


def test_over_declared_lists_the_devices_where_measured_exceeds_declared() -> None:
    declared = {"gpu0": 10 * G, "gpu1": 4 * G}
    assert over_declared(declared, None) == []  # not measured yet
    assert over_declared(declared, {"gpu0": 10 * G, "gpu1": 3 * G}) == []
    assert over_declared(declared, {"gpu1": 5 * G, "gpu0": 11 * G}) == ["gpu0", "gpu1"]
    assert over_declared(declared, {"gpu2": 1}) == ["gpu2"]  # on a device it never declared


def test_an_eviction_record_counts_what_was_free_before_anyone_left() -> None:
    record = eviction_record(
        at=1.5,
        target="big",
        evicted={"a", "b"},
        slept={"b"},
        needed={"gpu1": 8 * G},
        capacity={"gpu0": 24 * G, "gpu1": 12 * G},
        holding={"a": {"gpu1": 3 * G}, "b": {"gpu1": 5 * G}, "c": {"gpu0": 20 * G}},
    )
    assert record == {
        "at": 1.5,
        "target": "big",
        "stopped": ["a"],
        "slept": ["b"],
        "by": "memory",
        "devices": [
            {"name": "gpu1", "capacityBytes": 12 * G, "neededBytes": 8 * G, "freeBytes": 4 * G}
        ],
    }


def test_an_eviction_by_groups_has_no_devices() -> None:
    record = eviction_record(
        at=0.0, target="t", evicted={"x"}, slept=set(), needed={}, capacity={}, holding={}
    )
    assert (record["by"], record["devices"], record["stopped"]) == ("policy", [], ["x"])
