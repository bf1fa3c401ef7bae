"""Slow and surplus connections: a request head that does not arrive in time and connections
past the cap are closed, while well-behaved clients are served."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.server import body_deadline, protocol

DEADLINE = 10.0


async def connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to llamaswap at `base`, to send bytes as a slow client would."""
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    return await asyncio.open_connection(url.hostname, url.port)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF) before DEADLINE."""
    try:
        async with asyncio.timeout(DEADLINE):
            return await reader.read(1024) == b"" or await reader.read() == b""
    except TimeoutError:
        return False


async def test_a_request_head_that_trickles_in_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, _):
        reader, writer = await connect(base)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert await closed_by_peer(reader)
        assert time.monotonic() - started < 5.0
        writer.close()
        # A client that sends whole requests keeps its connection past the head timeout.
        reader, writer = await connect(base)
        for _ in range(2):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(DEADLINE):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                await reader.readexactly(2)  # "OK"
            await asyncio.sleep(0.7)  # idle longer than the head timeout, as pooled clients are
        writer.close()


async def test_a_later_request_head_that_trickles_in_is_cut_off_by_the_keepalive_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "KEEPALIVE_TIMEOUT_S", 0.5)
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, _):
        reader, writer = await connect(base)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n")
        async with asyncio.timeout(DEADLINE):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(2)
        assert await closed_by_peer(reader)
        writer.close()


async def test_connections_past_the_cap_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_CONNECTIONS", 5)
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, _):
        held = [await connect(base) for _ in range(5)]
        reader, writer = await connect(base)
        assert await closed_by_peer(reader)
        writer.close()
        for _, held_writer in held:
            held_writer.close()

        # Once they are gone, new connections are served again.
        async def healthy() -> bool:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/health") as r:
                return r.status == 200

        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    if await healthy():
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)


async def test_a_body_that_trickles_in_is_cut_off_but_a_slow_answer_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(body_deadline, "BODY_TIMEOUT_S", 0.5)
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, _):
        reader, writer = await connect(base)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mo'
        )
        started = time.monotonic()
        assert await closed_by_peer(reader)
        assert time.monotonic() - started < 5.0
        writer.close()
        # A whole body whose answer takes longer than the body deadline is served.
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/v1/chat/completions?wait=1s", json=body) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["model"] == "m"
