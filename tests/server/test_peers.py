"""Peers: remote servers reached by `<peer>/<model>` or an unambiguous bare name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers import free_port, wait_until
from inprocess import fake_models_yaml, running_llamaswap


@pytest.fixture
async def peer_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server standing in for a remote peer; records what it receives."""
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return web.json_response({"model": body.get("model"), "from": "peer"})

    app = web.Application()
    app.router.add_post("/base/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/base", seen
    await runner.cleanup()


def peers_yaml(url: str) -> str:
    return (
        fake_models_yaml(["local"])
        + "peers:\n"
        + "  remote:\n"
        + f"    proxy: {url}\n"
        + "    apiKey: sk-peer\n"
        + "    models: [big-model, local]\n"
        + "    filters:\n"
        + "      stripParams: temperature\n"
        + "      setParams: {top_k: 5}\n"
        + "  dead:\n"
        + f"    proxy: http://127.0.0.1:{free_port()}\n"
        + "    models: [gone]\n"
    )


async def post_chat(
    session: aiohttp.ClientSession, base: str, model: str
) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "temperature": 0.2, "messages": []}
    headers = {"Authorization": "Bearer client-key"}
    async with session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_peer_models_by_full_and_bare_name(
    peer_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = peer_server
    async with running_llamaswap(peers_yaml(url)) as (base, _), aiohttp.ClientSession() as s:
        for name in ("remote/big-model", "big-model"):
            status, answer = await post_chat(s, base, name)
            assert (status, answer) == (200, {"model": "big-model", "from": "peer"})
        request = seen[-1]
        assert request["path"] == "/base/v1/chat/completions"
        assert request["headers"]["Authorization"] == "Bearer sk-peer"
        assert request["headers"]["x-api-key"] == "sk-peer"
        assert "temperature" not in request["body"] and request["body"]["top_k"] == 5
        # A local model wins over a peer's model of the same name.
        status, answer = await post_chat(s, base, "local")
        assert status == 200 and answer["model"] == "local" and "from" not in answer
        status, answer = await post_chat(s, base, "remote/local")
        assert answer == {"model": "local", "from": "peer"}


async def test_unreachable_peer_is_a_502_envelope(
    peer_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = peer_server
    async with running_llamaswap(peers_yaml(url)) as (base, _), aiohttp.ClientSession() as s:
        status, answer = await post_chat(s, base, "dead/gone")
        assert status == 502
        assert answer["error"]["message"].startswith("peer proxy error: ")
        assert answer["error"]["code"] == "bad_gateway"


async def test_peer_models_are_listed(peer_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = peer_server
    async with (
        running_llamaswap(peers_yaml(url)) as (base, _),
        aiohttp.ClientSession() as s,
        s.get(f"{base}/v1/models") as resp,
    ):
        listed = {e["id"]: e for e in (await resp.json())["data"]}
    assert listed["remote/big-model"]["meta"]["llamaswap"] == {"type": "peer", "peerID": "remote"}
    assert listed["remote/big-model"]["name"] == "remote: big-model"
    assert "dead/gone" in listed and "local" in listed


async def test_peer_gets_its_own_host_and_is_recorded_as_peer_model(
    peer_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = peer_server
    async with running_llamaswap(peers_yaml(url)) as (base, _), aiohttp.ClientSession() as session:
        status, _ = await post_chat(session, base, "remote/big-model")
        assert status == 200
        assert seen[-1]["headers"]["Host"] == url.removeprefix("http://").removesuffix("/base")
        async with session.get(f"{base}/api/metrics/activity") as resp:
            rows = (await resp.json())["data"]
        assert [(r["model"], r["resp_status_code"]) for r in rows] == [("remote/big-model", 200)]


async def test_local_upstream_keeps_the_clients_host() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["local"])) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/upstream/local/headers") as resp,
    ):
        forwarded = await resp.json()
    assert forwarded["Host"] == base.removeprefix("http://")
    assert forwarded["X-Forwarded-For"] == "127.0.0.1"


async def test_upstream_sees_only_the_clients_headers() -> None:
    """aiohttp's client adds Accept, Accept-Encoding, User-Agent and a default Content-Type
    on its own; none may reach the upstream when the client did not send them."""
    async with running_llamaswap(fake_models_yaml(["local"])) as (base, _):
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /upstream/local/headers HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    forwarded = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    sent = {name.lower() for name in forwarded}
    assert sent <= {"host", "content-length", "x-forwarded-for"}, forwarded
    assert forwarded.get("Content-Length", "0") == "0"


async def test_expect_continue_is_answered_here_not_forwarded() -> None:
    """The client's `Expect: 100-continue` is answered by llamaswap, which reads the body
    before forwarding; the upstream gets the body at once and no `Expect`."""
    async with running_llamaswap(fake_models_yaml(["local"])) as (base, _):
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /upstream/local/headers HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"{}")
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert raw.startswith(b"HTTP/1.1 200")
    forwarded = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert "Expect" not in forwarded
    assert forwarded["Content-Length"] == "2"


async def test_peer_requests_are_listed_in_flight_and_can_be_cancelled() -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow_chat(request: web.Request) -> web.Response:
        await request.read()
        arrived.set()
        await release.wait()
        return web.json_response({"from": "peer"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = (
        fake_models_yaml(["local"])
        + f"peers:\n  slow:\n    proxy: http://127.0.0.1:{port}\n    models: [m]\n"
    )
    try:
        async with (
            running_llamaswap(config) as (base, state),
            aiohttp.ClientSession() as session,
        ):
            waiting = asyncio.create_task(post_chat(session, base, "slow/m"))
            await asyncio.wait_for(arrived.wait(), 10)
            listed = state.inflight.snapshot()
            assert [r["model"] for r in listed] == ["slow/m"]
            async with session.post(f"{base}/api/inflight/{listed[0]['id']}/cancel") as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(waiting, 10)
            await wait_until(lambda: not state.inflight.snapshot(), message="entry removed")
    finally:
        release.set()
        await runner.cleanup()
