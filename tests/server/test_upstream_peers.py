"""`/upstream/<peer>/<model>/...`: raw passthrough to a peer, with its apiKey, no swap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from helpers import free_port, wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.supervisor import ProcessState


@dataclass
class Peer:
    """A real HTTP server standing in for a remote peer; records what it receives."""

    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    ws_closes: list[int | None] = field(default_factory=list)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    port = free_port()
    record = Peer(f"http://127.0.0.1:{port}/base")

    async def anything(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        if ws.can_prepare(request).ok:
            record.seen.append({"path": request.path_qs, "headers": dict(request.headers)})
            await ws.prepare(request)
            await ws.send_str("peer here")
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data.upper())
            record.ws_closes.append(ws.close_code)
            return ws
        body = await request.read()
        record.seen.append(
            {"path": request.path_qs, "headers": dict(request.headers), "body": body}
        )
        return web.json_response({"from": "peer", "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/base/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield record
    await runner.cleanup()


def config(url: str) -> str:
    return (
        fake_models_yaml(["local"])
        + "peers:\n"
        + "  remote:\n"
        + f"    proxy: {url}\n"
        + "    apiKey: sk-peer\n"
        + "    models: [big-model, local, org/long-name]\n"
        + "  dead:\n"
        + f"    proxy: http://127.0.0.1:{free_port()}\n"
        + "    models: [gone]\n"
    )


async def test_peer_passthrough_by_full_and_bare_name(peer: Peer) -> None:
    async with running_llamaswap(config(peer.url)) as (base, state), aiohttp.ClientSession() as s:
        raw = b'{"model": "anything", "keep": [1, 2]}'
        for name in ("remote/big-model", "big-model"):
            headers = {"Authorization": "Bearer client-key", "Content-Type": "application/json"}
            url = f"{base}/upstream/{name}/v1/things?x=1"
            async with s.post(url, data=raw, headers=headers) as resp:
                assert resp.status == 200
                assert await resp.json() == {"from": "peer", "path": "/base/v1/things"}
            seen = peer.seen[-1]
            assert seen["path"] == "/base/v1/things?x=1"
            assert seen["body"] == raw  # untouched: no model rewrite, no filters
            assert seen["headers"]["Authorization"] == "Bearer sk-peer"
            assert seen["headers"]["x-api-key"] == "sk-peer"
        # A name with a slash, under a peer: the longest configured name wins.
        async with s.get(f"{base}/upstream/remote/org/long-name/info") as resp:
            assert (await resp.json())["path"] == "/base/info"
        # upstream.ignorePaths is for local models only.
        async with s.get(f"{base}/upstream/remote/big-model/favicon.ico") as resp:
            assert (await resp.json())["path"] == "/base/favicon.ico"
        assert state.router.state("local") is ProcessState.STOPPED  # nothing was started


async def test_local_name_wins_over_a_bare_peer_name(peer: Peer) -> None:
    async with running_llamaswap(config(peer.url)) as (base, state), aiohttp.ClientSession() as s:
        async with s.get(f"{base}/upstream/local/test") as resp:
            assert (resp.status, await resp.text()) == (200, "hi")
        assert state.router.state("local") is ProcessState.READY
        async with s.get(f"{base}/upstream/remote/local/test") as resp:
            assert await resp.json() == {"from": "peer", "path": "/base/test"}


async def test_peer_redirect_and_unreachable_peer(peer: Peer) -> None:
    async with running_llamaswap(config(peer.url)) as (base, _), aiohttp.ClientSession() as s:
        async with s.get(f"{base}/upstream/remote/big-model?q=1", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "/upstream/remote/big-model/?q=1"
        async with s.get(f"{base}/upstream/dead/gone/v1/models") as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["message"].startswith("peer proxy error: ")


async def test_peer_websocket_with_api_key_and_close_code(peer: Peer) -> None:
    async with running_llamaswap(config(peer.url)) as (base, _), aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{base}/upstream/remote/big-model/socket?id=3") as ws:
            assert await ws.receive_str(timeout=10) == "peer here"
            await ws.send_str("shout")
            assert await ws.receive_str(timeout=10) == "SHOUT"
            await ws.close(code=4002, message=b"done")
        seen = peer.seen[-1]
        assert seen["path"] == "/base/socket?id=3"
        assert seen["headers"]["x-api-key"] == "sk-peer"
        # The client's close code reaches the far end.
        await wait_until(lambda: peer.ws_closes == [4002], message="peer saw the close code")
