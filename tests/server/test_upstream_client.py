"""The lean upstream client against a scripted raw HTTP server on 127.0.0.1.

Each test's server is a real asyncio socket server whose answers are written byte for byte,
so framing (Content-Length, chunked, close-delimited, informational answers), keep-alive,
stale pooled connections and broken answers are exercised exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import pytest
from yarl import URL

from helpers import free_port, wait_until
from llamaswap.server.proxy.upstream_client import (
    HIGH_WATER,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamResponse,
    _request_head,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Counts connections; `handler(reader, writer, connection_number)` serves each one."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head + Content-Length body), or None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[Server, URL, UpstreamClient]]:
    server = Server(handler)
    port = free_port()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", port)
    client = UpstreamClient()
    try:
        yield server, URL(f"http://127.0.0.1:{port}/v1/x?a=1"), client
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()


async def read_all(response: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in response.iter_chunks()])


def answer(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


async def test_sends_the_request_and_reuses_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while (await server.read_request(reader)) is not None:
            writer.write(answer(b'{"n":%d}' % len(server.requests)))

    async with scripted(handler) as (server, url, client):
        for n in (1, 2, 3):
            response = await client.request("POST", url, [("X-Test", "yes")], b"{}")
            assert (response.status, response.reason) == (200, "OK")
            assert response.headers["Content-Type"] == "application/json"
            assert await read_all(response) == b'{"n":%d}' % n
        assert server.connections == 1  # keep-alive: one connection for all three
        first = server.requests[0]
        assert first.startswith(b"POST /v1/x?a=1 HTTP/1.1\r\n")
        assert b"X-Test: yes\r\n" in first and b"Content-Length: 2\r\n" in first
        assert b"Host: 127.0.0.1:" in first and first.endswith(b"\r\n\r\n{}")


@pytest.mark.parametrize("relayed", [False, True], ids=["request", "relay"])
async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one(relayed: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(answer(b"first" if n == 1 else b"second"))
        await writer.drain()
        if n == 1:  # keep-alive was promised, but the next request finds the socket closing
            await server.read_request(reader)

    async def post(client: UpstreamClient, url: URL, body: bytes) -> bytes:
        if not relayed:
            return await read_all(await client.request("POST", url, [], body))
        sink = ListSink()
        await client.relay(url, [], body, sink)
        return sink.body()

    async with scripted(handler) as (server, url, client):
        assert await post(client, url, b"a") == b"first"
        assert await post(client, url, b"b") == b"second"
        assert server.connections == 2


# Every framing an answer can have, in the order a scripted server sends them, and what a
# reader gets of each; the last is close-delimited (the server then closes).
FRAMINGS = [
    (answer(b'{"n":1}'), 200, b'{"n":1}'),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        200,
        b"abcde",
    ),
    (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer(b"after hints"),
        200,
        b"after hints",
    ),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 200, b"until the end"),
]


def serve_framings(server: Callable[[], Server]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while (await server().read_request(reader)) is not None:
            n = len(server().requests)
            writer.write(FRAMINGS[n - 1][0])
            if n == len(FRAMINGS):
                return  # close-delimited: the body ends with the connection

    return handler


async def test_chunked_close_delimited_empty_and_informational_answers() -> None:
    async with scripted(serve_framings(lambda: server)) as (server, url, client):
        got = []
        for _ in FRAMINGS:
            response = await client.request("GET", url, [], b"")
            got.append((response.status, await read_all(response)))
        assert got == [(status, body) for _, status, body in FRAMINGS]
        assert server.connections == 1


async def test_connection_refused_is_an_upstream_connection_error() -> None:
    client = UpstreamClient()
    url = URL(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(UpstreamConnectionError, match=r"cannot connect to 127\.0\.0\.1"):
        await client.request("GET", url, [], b"")


@pytest.mark.parametrize(
    "broken",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",  # cut mid-body
        b"this is not http\r\n\r\n",  # garbage
        b"",  # closed without an answer (on a fresh connection: not retried)
    ],
)
async def test_broken_answers_raise(broken: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(broken)

    async with scripted(handler) as (server, url, client):
        with pytest.raises(UpstreamConnectionError):
            response = await client.request("POST", url, [], b"x")
            await read_all(response)
        assert server.connections == 1


async def test_closing_an_answer_early_drops_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await server.read_request(reader)  # returns None once the client hung up

    async with scripted(handler) as (server, url, client):
        response = await client.request("POST", url, [], b"x")
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"hello"
        response.close()  # the consumer left: the upstream must see it
        await asyncio.wait_for(server.closed_by_client.wait(), 5)


async def test_a_large_body_arrives_whole_while_reading_is_paused_and_resumed() -> None:
    body = bytes(range(256)) * (4 * HIGH_WATER // 256)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(answer(body))
        await writer.drain()

    async with scripted(handler) as (server, url, client):
        response = await client.request("GET", url, [], b"")
        received = bytearray()
        async for chunk in response.iter_chunks():
            received += chunk
            if len(received) < HIGH_WATER:
                await asyncio.sleep(0)  # a slow consumer lets the buffer fill up
        assert bytes(received) == body


async def test_header_values_cannot_split_the_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(answer(b"ok"))

    async with scripted(handler) as (server, url, client):
        headers = [("X-Evil", "a\r\nX-Injected: 1"), ("X-Fine", "b")]
        await read_all(await client.request("POST", url, headers, b""))
        await wait_until(lambda: bool(server.requests))
        assert b"X-Injected" not in server.requests[0]
        assert b"X-Fine: b\r\n" in server.requests[0]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8080/x?a=1", b"Host: 127.0.0.1:8080\r\n"),
        ("http://[::1]:9000/y", b"Host: [::1]:9000\r\n"),
        ("http://example.com/z", b"Host: example.com\r\n"),
    ],
)
def test_request_head_names_the_upstream_host_unless_given(url: str, host: bytes) -> None:
    head = _request_head("GET", URL(url, encoded=True), [("Accept", "*/*")], b"")
    assert host in head and b"Content-Length" not in head
    given = _request_head("POST", URL(url, encoded=True), [("Host", "client.example")], b"")
    assert b"Host: client.example\r\n" in given and host not in given
    assert b"Content-Length: 0\r\n" in given


def test_request_head_frames_the_body_once_whatever_headers_it_is_given() -> None:
    url = URL("http://127.0.0.1:8080/x", encoded=True)
    given = [
        ("Content-Length", "3"),
        ("Transfer-Encoding", "chunked"),
        ("content-length", "99"),
        ("X-Fine", "b"),
    ]
    head = _request_head("POST", url, given, b"hello")
    assert head.count(b"Content-Length") == 1 and b"Content-Length: 5\r\n" in head
    assert b"Transfer-Encoding" not in head and b"content-length" not in head
    assert b"X-Fine: b\r\n" in head


async def test_next_chunk_reads_to_the_end_and_a_closed_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while (await server.read_request(reader)) is not None:
            writer.write(answer(b"whole body"))

    async with scripted(handler) as (server, url, client):
        response = await client.request("POST", url, [], b"{}")
        pieces = []
        while (piece := await response.next_chunk()) is not None:
            pieces.append(piece)
        assert b"".join(pieces) == b"whole body"
        assert await response.next_chunk() is None  # complete: stays complete
        closed = await client.request("POST", url, [], b"{}")  # the pooled connection again
        assert server.connections == 1
        closed.close()
        with pytest.raises(UpstreamConnectionError, match="closed before its end"):
            await closed.next_chunk()  # never mistaken for a complete answer


# ---- relay: the answer handed to a sink from the connection's callbacks --------------------


class ListSink:
    """Records what `relay` hands over; `hold_first` pauses the upstream at the first flush."""

    def __init__(self, hold_first: bool = False) -> None:
        self.started: tuple[int, str, dict[str, str]] | None = None
        self.flushes: list[tuple[bytes, bool]] = []
        self.pieces: list[bytes] = []
        self.source: asyncio.Transport | None = None
        self.hold_first = hold_first
        self.held = asyncio.Event()

    def bind(self, source: asyncio.Transport) -> None:
        self.source = source

    def start(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        assert self.started is None  # informational answers never reach the sink
        self.started = (status, reason, dict(headers))

    def piece(self, data: bytes) -> None:
        self.pieces.append(data)

    def flush(self, complete: bool) -> None:
        self.flushes.append((b"".join(self.pieces), complete))
        self.pieces = []
        if self.hold_first and not self.held.is_set() and not complete:
            assert self.source is not None
            self.source.pause_reading()
            self.held.set()

    def body(self) -> bytes:
        return b"".join(data for data, _ in self.flushes)


async def test_relay_hands_every_framing_to_the_sink_and_reuses_the_connection() -> None:
    async with scripted(serve_framings(lambda: server)) as (server, url, client):
        got = []
        for _ in FRAMINGS:
            sink = ListSink()
            await client.relay(url, [("X-Test", "yes")], b"{}", sink)
            assert sink.started is not None and sink.flushes[-1][1]  # the last flush ends it
            assert all(not complete for _, complete in sink.flushes[:-1])
            got.append((sink.started[0], sink.body()))
        assert got == [(status, body) for _, status, body in FRAMINGS]
        assert server.connections == 1  # one keep-alive connection served them all
        assert server.requests[0].startswith(b"POST /v1/x?a=1 HTTP/1.1\r\n")


async def test_relay_passes_each_read_on_as_it_arrives() -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    async with scripted(handler) as (server, url, client):
        sink = ListSink()
        relayed = asyncio.create_task(client.relay(url, [], b"x", sink))
        await wait_until(lambda: bool(sink.flushes))
        assert sink.flushes == [(b"first", False)]  # handed on before the rest was sent
        go_on.set()
        await relayed
        assert sink.body() == b"firstsecond" and sink.flushes[-1][1]


async def test_relay_stops_reading_while_the_sink_holds_back() -> None:
    body = bytes(range(256)) * (4 * HIGH_WATER // 256)

    writers: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writers.append(writer)
        writer.write(answer(body))
        await writer.drain()

    async with scripted(handler) as (server, url, client):
        sink = ListSink(hold_first=True)
        relayed = asyncio.create_task(client.relay(url, [], b"x", sink))
        await sink.held.wait()
        flushed = len(sink.flushes)
        # Held: the socket buffers fill and the upstream's own writes back up.
        await wait_until(lambda: bool(writers) and writers[0].transport.get_write_buffer_size() > 0)
        assert len(sink.flushes) == flushed and not relayed.done()
        assert sink.source is not None
        sink.source.resume_reading()
        await relayed
        assert sink.body() == body


async def test_relay_reports_an_answer_that_breaks_off_after_its_head() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")

    async with scripted(handler) as (server, url, client):
        sink = ListSink()
        with pytest.raises(UpstreamConnectionError):
            await client.relay(url, [], b"c", sink)
        assert sink.started is not None and sink.started[0] == 200


async def test_relay_gives_up_on_headers_that_do_not_come_in_time() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.read_request(reader)
        await server.read_request(reader)  # never answers; sees the client hang up

    async with scripted(handler) as (server, url, client):
        sink = ListSink()
        with pytest.raises(TimeoutError):
            await client.relay(url, [], b"x", sink, headers_within=0.2)
        await asyncio.wait_for(server.closed_by_client.wait(), 5)  # the request was dropped
        assert sink.started is None
