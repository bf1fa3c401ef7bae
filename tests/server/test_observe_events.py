"""/api/events: SSE frames with modelStatus, logData and swap events (spec §5.9)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap

DEADLINE = 10.0


class EventReader:
    """Parses `event:message\\ndata:<json>\\n\\n` frames into (type, decoded data)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.seen: list[tuple[str, Any]] = []

    async def next(self) -> tuple[str, Any]:
        frame = await self.resp.content.readuntil(b"\n\n")
        parts = frame.decode().strip("\n").split("\n")
        assert len(parts) == 2, frame
        event_line, data_line = parts
        assert event_line == "event:message"
        assert data_line.startswith("data:")
        outer = json.loads(data_line[5:])
        assert isinstance(outer["data"], str)  # the payload is JSON inside a string
        item = (outer["type"], json.loads(outer["data"]))
        self.seen.append(item)
        return item

    async def until(self, kind: str, pred: Any = lambda _: True) -> Any:
        async with asyncio.timeout(DEADLINE):
            while True:
                got_kind, data = await self.next()
                if got_kind == kind and pred(data):
                    return data


def state_of(status: list[dict[str, Any]], model: str) -> str:
    return next(str(e["state"]) for e in status if e["id"] == model)


async def test_initial_snapshot_then_live_events() -> None:
    config = fake_models_yaml(["a", "b"]) + "    aliases: [b-alias]\n"  # on b, the last
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as session:
        logging.getLogger("llamaswap.test").warning("history line")
        async with session.get(f"{base}/api/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            assert resp.headers["Cache-Control"] == "no-cache"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Accel-Buffering"] == "no"
            reader = EventReader(resp)
            kind, status = await reader.next()
            assert kind == "modelStatus"
            assert [e["id"] for e in status] == ["a", "b"]
            assert status[0] == {
                "id": "a",
                "name": "",
                "description": "",
                "state": "stopped",
                "unlisted": False,
                "peerID": "",
                "inFlight": 0,
                "queued": 0,
                "loadTimeS": None,
                "backoff": None,
                "group": "(default)",
                "ttl": 0,
                "idleS": None,
                "unloadInS": None,
                "port": state.config.start_port,
                "pid": None,
            }
            assert status[1]["aliases"] == ["b-alias"]
            assert await reader.next() == ("history", {"swaps": [], "states": []})
            assert await reader.next() == (
                "logData",
                {"source": "proxy", "data": "[WARN] history line\n"},
            )
            kind, upstream = await reader.next()
            assert (kind, upstream["source"]) == ("logData", "upstream")

            body = {"model": "b-alias", "messages": []}
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                assert r.status == 200
            await reader.until("modelStatus", lambda s: state_of(s, "b") == "starting")
            await reader.until("modelStatus", lambda s: state_of(s, "b") == "ready")
            swap = await reader.until("swap")
            assert swap["target"] == "b" and swap["evicted"] == [] and swap["error"] is None
            logging.getLogger("llamaswap.test").warning("live line")
            await reader.until(
                "logData", lambda d: d == {"source": "proxy", "data": "[WARN] live line\n"}
            )


async def test_slow_client_does_not_block_publishers() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, state),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/events") as resp,
    ):
        assert resp.status == 200
        # The client reads nothing while far more events than its buffer are published.
        bus = state.router.events
        for i in range(5000):
            bus.publish("swap", {"target": "a", "n": i})
        assert bus.dropped > 0
        # It is still served: the first frame is the snapshot.
        assert (await EventReader(resp).next())[0] == "modelStatus"


async def test_model_status_has_capabilities_and_peer_models() -> None:
    config = (
        fake_models_yaml(["a"])
        + "    capabilities: {in: [text, image], out: [text], tools: true, context: 4096}\n"
        + "peers:\n  remote:\n    proxy: http://127.0.0.1:9\n    models: [x, y]\n"
    )
    async with (
        running_llamaswap(config) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/events") as resp,
    ):
        kind, status = await EventReader(resp).next()
    assert kind == "modelStatus"
    assert [(e["id"], e["peerID"]) for e in status] == [
        ("a", ""),
        ("remote/x", "remote"),
        ("remote/y", "remote"),
    ]
    assert status[0]["capabilities"] == {"vision": True, "function_calling": True}
    assert status[0]["context_length"] == 4096
    assert status[1]["state"] == "stopped"


async def test_model_status_shows_group_ttl_time_left_port_and_pid() -> None:
    config = fake_models_yaml(["a", "b"]).replace("--model a\n", "--model a\n    ttl: 60\n") + (
        "groups:\n  pair:\n    members: [a]\n"
    )
    async with (
        running_llamaswap(config) as (base, state),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/events") as resp,
    ):
        reader = EventReader(resp)
        _, status = await reader.next()
        a, b = status
        assert (a["group"], a["ttl"], a["pid"], a["idleS"], a["unloadInS"]) == (
            "pair",
            60,
            None,
            None,
            None,
        )
        assert (b["group"], b["ttl"]) == ("(default)", 0)
        port_a = int(state.config.models["a"].proxy.rsplit(":", 1)[1])
        assert a["port"] == port_a and b["port"] != port_a
        async with session.post(f"{base}/v1/chat/completions", json={"model": "a"}) as r:
            assert r.status == 200
        # Once the request is done, a is idle: its ttl counts down.
        idle = await reader.until(
            "modelStatus", lambda s: s[0]["state"] == "ready" and s[0]["idleS"] is not None
        )
        a = idle[0]
        assert a["pid"] == state.router.processes["a"].pid is not None
        assert 0 <= a["idleS"] < 10
        assert abs(a["unloadInS"] + a["idleS"] - 60) <= 0.2
        assert idle[1]["pid"] is None and idle[1]["unloadInS"] is None  # b never started


async def test_swaps_and_state_changes_before_the_client_came_are_in_the_initial_snapshot() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a", "b"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        for model in ("a", "b"):
            async with session.post(f"{base}/v1/chat/completions", json={"model": model}) as r:
                assert r.status == 200
        async with session.get(f"{base}/api/events") as resp:
            reader = EventReader(resp)
            history = await reader.until("history")
    swaps = history["swaps"]
    assert [(s["target"], s["evicted"], s["error"]) for s in swaps] == [
        ("a", [], None),
        ("b", ["a"], None),
    ]
    assert swaps[0]["at"] <= swaps[1]["at"]
    assert swaps[0]["ago_s"] >= swaps[1]["ago_s"] >= 0
    assert all(s["duration_s"] > 0 for s in swaps)
    states = history["states"]
    assert [(s["id"], s["old"], s["new"]) for s in states] == [
        ("a", "stopped", "starting"),
        ("a", "starting", "ready"),
        ("a", "ready", "stopping"),
        ("a", "stopping", "stopped"),
        ("b", "stopped", "starting"),
        ("b", "starting", "ready"),
    ]
    assert [s["at"] for s in states] == sorted(s["at"] for s in states)


async def test_in_flight_counts_are_sent_coalesced_and_end_current() -> None:
    """Two lease events per request do not become two modelStatus frames per request: the
    counts go out at most every LEASE_COUNTS_EVERY_S, and the last frame has the latest."""
    requests = 40
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        body = {"model": "a", "messages": []}
        async with session.post(f"{base}/v1/chat/completions", json=body) as r:
            assert r.status == 200  # a is ready before the events are followed
        async with session.get(f"{base}/api/events") as resp:
            reader = EventReader(resp)
            await reader.until("modelStatus")
            seen_before = len(reader.seen)
            # Held in flight, then released: the UI must see 1 and then 0.
            held = asyncio.Event()
            go = asyncio.Event()

            async def hold(_: str) -> None:
                held.set()
                await go.wait()

            state.before_forward = hold
            first = asyncio.create_task(session.post(f"{base}/v1/chat/completions", json=body))
            async with asyncio.timeout(DEADLINE):
                await held.wait()
            await reader.until("modelStatus", lambda s: s[0]["inFlight"] == 1)
            state.before_forward = None
            go.set()
            (await first).release()
            for _ in range(requests):
                async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
            # A marker through the same bus: every lease event was handled before it.
            state.router.events.publish("activity", {"marker": True})
            await reader.until("activity", lambda d: d == {"marker": True})
            frames = [k for k, _ in reader.seen[seen_before:] if k == "modelStatus"]
            assert len(frames) < requests  # one per lease event would be 2 × requests
            await reader.until("modelStatus", lambda s: s[0]["inFlight"] == 0)
