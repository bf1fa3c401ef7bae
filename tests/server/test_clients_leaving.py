"""Clients that hang up at any point of an answer: never an unhandled error, never a stuck
lease, and the server keeps serving (stress: counts failures)."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from helpers import wait_until
from inprocess import chat, fake_models_yaml, running_llamaswap
from llamaswap.server.proxy.loading import LoadingStream


async def hang_up_after(port: int, raw: bytes, keep: int) -> int:
    """Send `raw`, read about `keep` bytes of the answer, then close. Returns bytes read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    got = 0
    while got < keep:
        data = await reader.read(min(4096, keep - got))
        if not data:
            break
        got += len(data)
    writer.close()
    await writer.wait_closed()
    return got


def chat_request(model: str, stream: bool, query: str) -> bytes:
    body = json.dumps({"model": model, "messages": [], "stream": stream}).encode()
    return (
        f"POST /v1/chat/completions{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_clients_hanging_up_anywhere_cause_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="llamaswap")
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        await chat(session, base, "a")
        port = int(base.rsplit(":", 1)[1])
        full = {
            stream: await hang_up_after(port, chat_request("a", stream, "?chunks=3"), 1 << 20)
            for stream in (False, True)
        }
        rng = random.Random(7)
        cuts = []
        for _ in range(300):
            stream = rng.random() < 0.5
            # Anywhere from the status line to just short of (or at) the final chunk marker.
            keep = rng.choice([rng.randrange(1, full[stream] + 1), full[stream] - 5])
            cuts.append(hang_up_after(port, chat_request("a", stream, "?chunks=3"), keep))
        await asyncio.gather(*cuts)
        await wait_until(lambda: state.router.lease_count("a") == 0, message="leases released")
        await wait_until(lambda: not state.inflight.snapshot(), message="in-flight list empty")
        assert (await chat(session, base, "a"))["model"] == "a"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_connection_failing_at_the_final_chunk_marker_is_not_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (found by the HTTP fuzzer): a client that had the whole body closed before
    the final chunk marker was written; `write_eof` raised and was logged as an unhandled
    error. The failure is injected here, since the real window is a few microseconds."""
    caplog.set_level(logging.WARNING, logger="llamaswap")
    real_write_eof = web.StreamResponse.write_eof
    failed: list[str] = []

    async def failing_write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
        if self.headers.get("Content-Type", "").startswith("text/event-stream") and not failed:
            failed.append("once")
            raise ClientConnectionResetError("Cannot write to closing transport")
        await real_write_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write_eof", failing_write_eof)
    # aiohttp's writer is what fails here: the fast path does not use it.
    async with running_llamaswap(fake_models_yaml(["a"]), fast_path=False) as (base, state):
        port = int(base.rsplit(":", 1)[1])
        await hang_up_after(port, chat_request("a", True, "?chunks=3"), 1 << 20)
        assert failed == ["once"]
        await wait_until(lambda: state.router.lease_count("a") == 0, message="lease released")
        await hang_up_after(port, chat_request("a", False, ""), 1 << 20)  # still serving
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_client_gone_while_a_loading_stream_finishes_is_not_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any write to a client that hung up ends the request quietly (here: the loading
    stream's closing lines), with the lease released."""
    caplog.set_level(logging.WARNING, logger="llamaswap")

    async def client_gone(self: LoadingStream) -> None:
        transport = self._request.transport
        assert transport is not None
        transport.close()
        raise ClientConnectionResetError("Cannot write to closing transport")

    monkeypatch.setattr(LoadingStream, "finish", client_gone)
    config = (
        fake_models_yaml(["slow"]).replace("--model slow", "--model slow --startup-delay 0.3")
        + "sendLoadingState: true\n"
    )
    async with running_llamaswap(config) as (base, state):
        port = int(base.rsplit(":", 1)[1])
        await hang_up_after(port, chat_request("slow", True, ""), 1 << 20)
        await wait_until(lambda: state.router.lease_count("slow") == 0, message="lease released")
        await wait_until(lambda: not state.inflight.snapshot(), message="in-flight list empty")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
