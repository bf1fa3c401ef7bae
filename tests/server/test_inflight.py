"""In-flight list and cancel API."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import make_mocked_request

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.observe.events import EventBus
from llamaswap.server.inflight import InflightTracker


async def test_list_and_cancel_a_request() -> None:
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, state):
        parked = asyncio.Event()

        async def park(_: str) -> None:
            parked.set()
            await asyncio.Event().wait()  # held until cancelled

        state.before_forward = park
        async with aiohttp.ClientSession() as client, aiohttp.ClientSession() as admin:
            body = {"model": "m", "messages": []}
            headers = {"Authorization": "Bearer secret-key", "X-Forwarded-For": "10.1.2.3"}

            async def call() -> int:
                async with client.post(
                    f"{base}/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    await resp.read()
                    return resp.status

            held = asyncio.create_task(call())
            await asyncio.wait_for(parked.wait(), 10)
            async with admin.get(f"{base}/api/inflight") as resp:
                (entry,) = (await resp.json())["requests"]
            assert entry["model"] == "m"
            assert entry["req_path"] == "/v1/chat/completions"
            assert entry["remote_ip"] == "10.1.2.3"
            assert entry["req_headers"]["Authorization"] == "[REDACTED]"
            assert state.router.lease_count("m") == 1

            async with admin.post(f"{base}/api/inflight/{entry['id']}/cancel") as resp:
                assert (resp.status, await resp.json()) == (200, {"msg": "ok"})
            result = await asyncio.gather(held, return_exceptions=True)
            assert isinstance(result[0], aiohttp.ClientError)  # the connection was cut
            await wait_until(lambda: state.router.lease_count("m") == 0, message="lease freed")
            async with admin.get(f"{base}/api/inflight") as resp:
                assert (await resp.json())["requests"] == []
            async with admin.post(f"{base}/api/inflight/{entry['id']}/cancel") as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["message"] == "inflight request not found"


async def test_rows_are_published_to_listeners_and_a_late_one_starts_from_the_snapshot() -> None:
    bus = EventBus()
    tracker = InflightTracker()
    request = make_mocked_request("POST", "/v1/chat/completions")
    with tracker.track(request, "m", bus) as first:  # nobody listens: no upsert is built
        sub = bus.subscribe(kinds=["inflight"])
        assert [row["id"] for row in tracker.snapshot()] == [first.id]
    removed = sub.get_nowait()
    assert removed is not None and removed.data == {"operation": "remove", "id": first.id}
    with tracker.track(request, "m", bus) as second:
        pass
    upsert, remove = sub.get_nowait(), sub.get_nowait()
    assert upsert is not None and upsert.data["operation"] == "upsert"
    assert upsert.data["request"]["id"] == second.id
    assert remove is not None and remove.data == {"operation": "remove", "id": second.id}
    assert sub.get_nowait() is None
