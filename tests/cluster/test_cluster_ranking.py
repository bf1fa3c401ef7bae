"""Where the cluster sends a request for a model (`cluster.ranking`), without Ray."""

from __future__ import annotations

from llamaswap.cluster.ranking import Eviction, Residency, rank

ALL = frozenset({"m1", "m2", "m3"})


def node(name: str, **kw: object) -> Residency:
    return Residency(node=name, models=kw.pop("models", ALL), **kw)  # type: ignore[arg-type]


def test_ready_with_a_free_slot_beats_loading_and_cold() -> None:
    nodes = [
        ("cold", node("cold")),
        ("loading", node("loading", starting=frozenset({"m1"}))),
        ("ready", node("ready", ready=frozenset({"m1"}), limits={"m1": 2}, inflight={"m1": 1})),
    ]
    assert rank(nodes, "m1") == [["ready"], ["loading"], ["cold"]]


def test_a_saturated_ready_node_ranks_with_loading_ones() -> None:
    full = node("full", ready=frozenset({"m1"}), limits={"m1": 1}, inflight={"m1": 1})
    assert rank([("full", full), ("cold", node("cold"))], "m1") == [["full"], ["cold"]]


def test_nothing_to_evict_beats_evicting_and_idle_evictions_beat_busy_ones() -> None:
    nodes = [
        ("busy", node("busy", evictions={"m1": Eviction(1, 3)})),
        ("two", node("two", evictions={"m1": Eviction(2, 0)})),
        ("idle", node("idle", evictions={"m1": Eviction(1, 0)})),
        ("free", node("free")),
    ]
    assert rank(nodes, "m1") == [["free"], ["idle"], ["busy"], ["two"]]


def test_a_node_that_may_not_run_the_model_is_never_ranked() -> None:
    nodes = [
        ("a", node("a", models=frozenset({"m1"}), ready=frozenset({"m2"}))),
        ("b", node("b", models=frozenset({"m2"}))),
    ]
    assert rank(nodes, "m2") == [["b"]]
    assert rank(nodes, "m3") == []


def test_a_model_just_sent_somewhere_counts_as_loading_there() -> None:
    nodes = [("a", node("a")), ("b", node("b"))]
    assert rank(nodes, "m1", recent={"b": True}) == [["b"], ["a"]]


def test_without_a_model_every_node_is_one_rank() -> None:
    assert rank([("a", node("a")), ("b", node("b"))], None) == [["a", "b"]]


def test_a_report_survives_the_trip_through_stats() -> None:
    original = node(
        "a",
        ready=frozenset({"m1"}),
        starting=frozenset({"m2"}),
        inflight={"m1": 2},
        limits={"m1": 4},
        evictions={"m3": Eviction(1, 2)},
    )
    assert Residency.from_stats(original.to_stats()) == original
    assert Residency.from_stats({}) is None


def test_a_report_crosses_ray_whole_drain_flag_and_time_included() -> None:
    report = node(
        "box-a",
        ready=frozenset({"m1"}),
        inflight={"m1": 2},
        limits={"m1": 4},
        evictions={"m2": Eviction(1, 2)},
        draining=True,
        at=1234.5,
    )
    assert Residency.from_stats(report.to_stats()) == report
