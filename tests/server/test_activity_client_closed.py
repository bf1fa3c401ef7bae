"""A request whose client left before the answer ended is recorded as 499 (nginx's "client
closed request", as llama-swap records it), wherever it was: waiting for its model to load,
waiting for the upstream's answer, mid-stream, or cancelled from `/api/inflight`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.observe.activity import ActivityQuery
from llamaswap.server.inflight import CANCELLED_BY_OPERATOR
from llamaswap.server.proxy.recording import CLIENT_CLOSED_MESSAGE
from llamaswap.server.state import AppState


def chat_request(model: str, stream: bool, query: str = "") -> bytes:
    body = json.dumps({"model": model, "messages": [], "stream": stream}).encode()
    return (
        f"POST /v1/chat/completions{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def leave_when(base: str, raw: bytes, ready: Callable[[bytes], bool]) -> bytes:
    """Send `raw`, read the answer until `ready(what was read so far)` (or until the server
    closed the connection), then hang up."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    got = b""
    async with asyncio.timeout(10):
        while not ready(got) and not reader.at_eof():
            # Short reads: `ready` may wait on the server's state, not on bytes.
            with contextlib.suppress(TimeoutError):
                got += await asyncio.wait_for(reader.read(4096), 0.01)
    writer.close()
    await writer.wait_closed()
    return got


async def only_row(state: AppState) -> dict[str, Any]:
    await wait_until(lambda: state.activity.page(ActivityQuery())["total"] == 1, timeout=10)
    (row,) = state.activity.page(ActivityQuery())["data"]
    assert isinstance(row, dict)
    return row


async def test_client_leaving_mid_stream_is_recorded_as_499() -> None:
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, state):
        raw = chat_request("m", True, "?chunks=100&chunk_delay=30")
        got = await leave_when(base, raw, lambda got: got.count(b"data:") >= 3)
        assert got.startswith(b"HTTP/1.1 200")
        row = await only_row(state)
        assert row["resp_status_code"] == 499
        assert row["error_msg"] == CLIENT_CLOSED_MESSAGE
        assert row["resp_content_type"] == "text/event-stream"
        await wait_until(lambda: state.router.lease_count("m") == 0, message="lease released")


async def test_client_leaving_before_the_answer_is_recorded_as_499() -> None:
    async with running_llamaswap(fake_models_yaml(["m"])) as (base, state):
        # The upstream holds its answer back; the client leaves while the lease is held.
        raw = chat_request("m", False, "?wait=5000")
        await leave_when(base, raw, lambda _: state.router.lease_count("m") == 1)
        row = await only_row(state)
        assert (row["resp_status_code"], row["error_msg"]) == (499, CLIENT_CLOSED_MESSAGE)
        assert row["duration_ms"] < 5000


async def test_client_leaving_while_its_model_loads_is_recorded_as_499() -> None:
    config = fake_models_yaml(["slow"]).replace("--model slow", "--model slow --startup-delay 3")
    async with running_llamaswap(config) as (base, state):
        raw = chat_request("slow", False)
        await leave_when(base, raw, lambda _: state.router.queued("slow") == 1)
        row = await only_row(state)
        assert (row["resp_status_code"], row["error_msg"]) == (499, CLIENT_CLOSED_MESSAGE)
        assert row["model"] == "slow"


async def test_a_complete_answer_is_200_and_a_cancelled_one_499() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/v1/chat/completions", json={"model": "m"}) as resp:
            assert resp.status == 200
        row = await only_row(state)
        assert (row["resp_status_code"], row.get("error_msg", "")) == (200, "")

        held = asyncio.create_task(
            leave_when(base, chat_request("m", False, "?wait=5000"), lambda got: False)
        )
        await wait_until(lambda: state.router.lease_count("m") == 1, message="request held")
        (entry,) = state.inflight.snapshot()
        async with session.post(f"{base}/api/inflight/{entry['id']}/cancel") as resp:
            assert resp.status == 200
        await wait_until(lambda: state.activity.page(ActivityQuery())["total"] == 2, timeout=10)
        newest = state.activity.page(ActivityQuery())["data"][0]
        assert (newest["resp_status_code"], newest["error_msg"]) == (499, CANCELLED_BY_OPERATOR)
        assert await held == b""  # the connection was cut with no answer
