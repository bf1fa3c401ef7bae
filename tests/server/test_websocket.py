"""Websockets on `/upstream/<model>/...`: passthrough, the lease, and `compat.ignoreWebsockets`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.supervisor import ProcessState


async def hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The fake upstream's first message: {model, pid, protocol, query}."""
    data: dict[str, Any] = json.loads(await ws.receive_str(timeout=10))
    return data


async def chat(session: aiohttp.ClientSession, base: str, model: str) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.json()


def two_models(extra_for_a: str = "") -> str:
    """Models `a` and `b` in the default group: starting one stops the other."""
    return fake_models_yaml(["a"], extra_for_a) + fake_models_yaml(["b"]).removeprefix("models:\n")


async def test_echo_through_upstream_with_protocol_query_and_close_code() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as s,
    ):
        async with s.ws_connect(
            f"{base}/upstream/m/ws?clientId=7", protocols=("superchat", "nope")
        ) as ws:
            assert ws.protocol == "superchat"  # the upstream's choice reaches the client
            greeting = await hello(ws)
            assert (greeting["model"], greeting["protocol"]) == ("m", "superchat")
            assert greeting["query"] == "clientId=7"
            # The client's Host is kept (a web UI compares it with the page's Origin).
            assert greeting["host"] == base.removeprefix("http://")
            await ws.send_str("text ✓")
            assert await ws.receive_str(timeout=10) == "text ✓"
            payload = bytes(range(256)) * 1024  # larger than one read, all byte values
            await ws.send_bytes(payload)
            assert await ws.receive_bytes(timeout=10) == payload
            # The socket holds a lease (the model cannot be swapped out) and is in flight.
            assert state.router.lease_count("m") == 1
            assert [r["req_path"] for r in state.inflight.snapshot()] == ["/upstream/m/ws"]
            # The upstream closes with its own code and reason: the client gets both.
            await ws.send_str("close 4001")
            msg = await ws.receive(timeout=10)
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")
        await wait_until(lambda: state.router.lease_count("m") == 0, message="lease released")
        await wait_until(lambda: not state.inflight.snapshot(), message="in-flight entry gone")


async def test_swap_waits_for_an_open_websocket() -> None:
    async with (
        running_llamaswap(two_models()) as (base, state),
        aiohttp.ClientSession() as s,
    ):
        ws = await s.ws_connect(f"{base}/upstream/a/ws")
        assert (await hello(ws))["model"] == "a"
        swap = asyncio.create_task(chat(s, base, "b"))
        await wait_until(lambda: state.router.queue_depth() == 1, message="b queued")
        # The request for b waits; a keeps running and the socket keeps working.
        assert state.router.state("a") is ProcessState.READY
        assert state.router.state("b") is ProcessState.STOPPED
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=10) == "still here"
        assert not swap.done()
        await ws.close()
        status, answer = await asyncio.wait_for(swap, 30)
        assert (status, answer["model"]) == (200, "b")
        assert state.router.state("a") is ProcessState.STOPPED


async def test_client_leaving_abruptly_frees_the_lease() -> None:
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, state):
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{base}/upstream/m/ws")
        await hello(ws)
        assert state.router.lease_count("m") == 1
        await session.close()  # drops the connection without a close handshake
        await wait_until(lambda: state.router.lease_count("m") == 0, message="lease released")
        await wait_until(lambda: not state.inflight.snapshot(), message="in-flight entry gone")


async def test_upstream_refusing_the_handshake_is_a_502() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as s,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{base}/upstream/m/test")  # a plain HTTP route upstream
        assert refused.value.status == 502
        assert state.router.lease_count("m") == 0


async def test_server_shutdown_closes_websockets_with_1001() -> None:
    async with aiohttp.ClientSession() as s:
        async with running_llamaswap(fake_models_yaml(["m"])) as (base, _):
            ws = await s.ws_connect(f"{base}/upstream/m/ws")
            await hello(ws)
        # Shutdown did not wait out the drain timeout (60 s here) for the open socket.
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)


async def test_ignored_websocket_cannot_start_the_model() -> None:
    config = two_models("compat: {ignoreWebsockets: true}")
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{base}/upstream/a/ws", headers={"Accept": "application/json"})
        assert refused.value.status == 409
        assert state.router.state("a") is ProcessState.STOPPED
        async with s.get(f"{base}/upstream/a/ws") as resp:  # plain HTTP may start it
            assert resp.status == 200
        assert state.router.state("a") is ProcessState.READY


async def test_ignored_websocket_error_message() -> None:
    config = fake_models_yaml(["a"], "compat: {ignoreWebsockets: true}")
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as s:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
        async with s.get(f"{base}/upstream/a/ws", headers=headers) as resp:
            assert resp.status == 409
            body = await resp.json()
        assert body["error"]["message"] == (
            "model a is not loaded; ignored websocket requests cannot start it"
        )


async def test_ignored_websocket_passes_when_loaded_and_does_not_block_a_swap() -> None:
    config = two_models("compat: {ignoreWebsockets: true}")
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as s:
        status, _ = await chat(s, base, "a")
        assert status == 200
        ws = await s.ws_connect(f"{base}/upstream/a/ws")
        assert (await hello(ws))["model"] == "a"
        await ws.send_bytes(b"\x00ok")
        assert await ws.receive_bytes(timeout=10) == b"\x00ok"
        # No lease, not in flight: nothing holds the model for this socket.
        assert state.router.lease_count("a") == 0
        assert state.inflight.snapshot() == []
        # A swap to b goes ahead at once, stopping a under the socket, which is closed.
        status, answer = await asyncio.wait_for(chat(s, base, "b"), 30)
        assert (status, answer["model"]) == (200, "b")
        assert state.router.state("a") is ProcessState.STOPPED
        msg = await ws.receive(timeout=10)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.closed


async def test_cancelling_the_in_flight_entry_closes_the_socket() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as s,
    ):
        ws = await s.ws_connect(f"{base}/upstream/m/ws")
        await hello(ws)
        [entry] = state.inflight.snapshot()
        async with s.post(f"{base}/api/inflight/{entry['id']}/cancel") as resp:
            assert resp.status == 200
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        await wait_until(lambda: state.router.lease_count("m") == 0, message="lease released")
