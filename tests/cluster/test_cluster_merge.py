"""Merging the nodes' `/metrics` and `/api/events`, and the drain rules, without Ray."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llamaswap.cluster.draining import named_node, why_refused
from llamaswap.cluster.merge_events import merged, tag_frame, tagged_frames
from llamaswap.cluster.merge_metrics import merge_metrics


def node_metrics(requests: int, wait: float, extra_gauge: bool = False) -> str:
    """A node's `/metrics` text, rendered as the node renders it (prometheus_client)."""
    registry = CollectorRegistry()
    counter = Counter("llamaswap_requests", "Requests.", ["model"], registry=registry)
    counter.labels("m").inc(requests)
    Histogram("llamaswap_queue_wait_seconds", "Wait.", registry=registry).observe(wait)
    if extra_gauge:
        Gauge("llamaswap_only_here", "One node's.", registry=registry).set(7)
    return generate_latest(registry).decode()


def test_metrics_of_every_node_merge_with_a_node_label_and_one_help_per_family() -> None:
    text = merge_metrics(
        [("box-a", node_metrics(1, 0.1)), ("box-b", node_metrics(2, 3.0, extra_gauge=True))]
    ).decode()
    assert text.count("# HELP llamaswap_requests_total ") == 1
    assert text.count("# TYPE llamaswap_queue_wait_seconds histogram") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        s.labels["node"]: s.value for s in families["llamaswap_requests"].samples
        if s.name == "llamaswap_requests_total"
    }  # fmt: skip
    assert requests == {"box-a": 1.0, "box-b": 2.0}
    counts = {
        s.labels["node"]: s.value for s in families["llamaswap_queue_wait_seconds"].samples
        if s.name.endswith("_count")
    }  # fmt: skip
    assert counts == {"box-a": 1.0, "box-b": 1.0}
    assert [s.labels for s in families["llamaswap_only_here"].samples] == [{"node": "box-b"}]


def test_a_node_whose_metrics_do_not_parse_is_left_out() -> None:
    text = merge_metrics([("box-a", "not { metrics"), ("box-b", node_metrics(2, 1.0))]).decode()
    assert 'node="box-b"' in text
    assert 'node="box-a"' not in text


def frame(kind: str, payload: object) -> bytes:
    body = json.dumps({"type": kind, "data": json.dumps(payload)})
    return f"event:message\ndata:{body}".encode()


def envelope(tagged: bytes) -> dict[str, object]:
    (data,) = [line for line in tagged.split(b"\n") if line.startswith(b"data:")]
    parsed: dict[str, object] = json.loads(data[len(b"data:") :])
    return parsed


def test_an_event_gains_its_node_and_keeps_its_payload() -> None:
    tagged = envelope(tag_frame(frame("modelStatus", [{"id": "m"}]), "box-a"))
    assert tagged["node"] == "box-a"
    assert tagged["type"] == "modelStatus"
    assert json.loads(str(tagged["data"])) == [{"id": "m"}]
    assert tag_frame(b": keep-alive", "box-a") == b": keep-alive"


async def chunks_of(
    data: bytes, size: int, then_wait: asyncio.Event | None = None
) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
    if then_wait is not None:
        await then_wait.wait()


async def test_frames_split_across_chunks_come_out_whole() -> None:
    stream = frame("a", 1) + b"\n\n" + frame("b", 2) + b"\n\n"
    frames = [f async for f in tagged_frames(chunks_of(stream, 7), "n")]
    assert [envelope(f)["type"] for f in frames] == ["a", "b"]
    assert all(f.endswith(b"\n\n") for f in frames)


async def test_merged_streams_carry_every_nodes_events_and_end_when_one_ends() -> None:
    hold = asyncio.Event()
    a = chunks_of(frame("x", 1) + b"\n\n", 5, then_wait=hold)  # stays open
    b = chunks_of(frame("x", 2) + b"\n\n" + frame("y", 3) + b"\n\n", 11)  # ends
    seen = [envelope(f) async for f in merged([("box-a", a), ("box-b", b)])]
    assert sorted((e["node"], e["type"]) for e in seen) == [
        ("box-a", "x"),
        ("box-b", "x"),
        ("box-b", "y"),
    ]


ALLOWED = {"box-a": frozenset({"only-a", "shared"}), "box-b": frozenset({"shared"})}


def test_a_model_whose_every_node_drains_is_refused_naming_the_node() -> None:
    refused = why_refused("only-a", ALLOWED, {"box-a"})
    assert refused is not None and "box-a" in refused and "draining" in refused
    assert why_refused("shared", ALLOWED, {"box-a"}) is None
    assert why_refused("only-a", ALLOWED, set()) is None
    assert why_refused(None, ALLOWED, {"box-a"}) is None
    assert why_refused(None, ALLOWED, {"box-a", "box-b"}) == "every node of the cluster is draining"


@pytest.mark.parametrize(
    ("body", "node", "why"),
    [
        (b'{"node": "box-a"}', "box-a", ""),
        (b'{"node": "box-z"}', None, "no node 'box-z'"),
        (b"[1]", None, "NAME one of: box-a, box-b"),
        (b"{", None, "NAME one of"),
        (b"", None, "NAME one of"),
    ],
)
def test_a_drain_request_names_a_known_node(body: bytes, node: str | None, why: str) -> None:
    found, message = named_node(body, ["box-a", "box-b"])
    assert found == node
    assert why in message
