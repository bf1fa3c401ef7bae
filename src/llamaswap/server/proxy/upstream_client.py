"""A lean HTTP/1.1 client for forwarding requests to upstreams.

aiohttp's `ClientSession` costs ≈ 280 µs of CPU per small request here; this client, an
asyncio protocol around httptools' response parser (the parser uvicorn uses) over pooled
keep-alive connections, ≈ 80–100 µs. It does only what the forwarder needs:

* the request is sent whole (method, path, the given headers, a `Content-Length` body);
* the answer's status and headers, then its body chunk by chunk as they arrive (nothing is
  buffered beyond what the consumer has not read yet; reading pauses above `HIGH_WATER`);
* a connection goes back to the pool only after a complete answer that allows keep-alive;
  a consumer that stops early closes it (which cancels the upstream's work);
* a reused connection that the upstream had closed while idle (it restarted, or its
  keep-alive timer fired) fails before any byte of the answer: the request is sent once more
  on a fresh connection. Nothing else is retried.

Two ways to read an answer: `request` returns it once its headers are in and hands the body
over chunk by chunk (`UpstreamResponse.next_chunk`, one wake-up of the reader per chunk);
`relay` passes everything to a `RelaySink` from the connection's own callbacks as it is
parsed, and the caller wakes once, when the answer is complete. The fast path relays; the
aiohttp forwarder reads.

Everything else (HEAD, websockets, request bodies that are still streaming) stays with
aiohttp in the forwarder.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Protocol, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["RelaySink", "UpstreamClient", "UpstreamConnectionError", "UpstreamResponse"]

HIGH_WATER = 1024 * 1024  # unread body bytes at which reading from the upstream pauses
LOW_WATER = 256 * 1024
MAX_IDLE_PER_HOST = 64
JOIN_BODY_BYTES = 64 * 1024  # bodies up to this size go out in the same write as the head


class UpstreamConnectionError(ConnectionError):
    """The upstream could not be reached, or broke off before or during its answer."""


class RelaySink(Protocol):
    """Where `UpstreamClient.relay` puts an answer, from the connection's callbacks (so
    nothing here may block or await)."""

    def bind(self, source: asyncio.Transport) -> None:
        """The upstream connection the answer comes from (pause its reading to hold back)."""

    def start(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        """The final status and headers (informational answers are skipped)."""

    def piece(self, data: bytes) -> None:
        """A piece of the body (de-chunked), in order."""

    def flush(self, complete: bool) -> None:
        """What arrived in one read was passed on; `complete` when the answer ended in it."""


class _Connection(asyncio.Protocol):
    """One TCP connection; answers one request at a time (no pipelining)."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.reused = False
        # One parser for the connection's life: a reused connection is always at a message
        # boundary (only complete answers return it to the pool).
        self._parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        """Ready for the next request (fresh answer state)."""
        self.reason = ""
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._header_name = ""
        self.headers_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wakeup: asyncio.Future[None] | None = None
        self.complete = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self._paused = False
        self._keep_alive = False
        self.sink: RelaySink | None = None  # set by `relay` for its answer
        self.done: asyncio.Future[None] | None = None  # `relay`: the answer ended (or broke)

    # ---- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an `asyncio.Transport` subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"invalid answer from upstream: {exc}"))
            self.close()
        if self.sink is not None:
            self._pass_on()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.complete:
            return
        if self.headers_ready.done() and self._ends_at_close():
            self.on_message_complete()  # a body delimited by the end of the connection
            if self.sink is not None:
                self._pass_on()
            return
        self._fail(UpstreamConnectionError(str(exc) if exc else "upstream closed the connection"))

    # ---- httptools callbacks --------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name:
            self._header_name = name.decode("latin-1")
            self.headers.add(self._header_name, value.decode("latin-1"))
        else:  # a continuation of the previous value
            self.headers[self._header_name] += value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational (e.g. 103 Early Hints): the answer follows
            self.reason, self.headers = "", CIMultiDict()
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)
        if self.sink is not None:
            self.sink.start(status, self.reason, self.headers)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.piece(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_ready.done():  # the end of an informational answer
            return
        self.complete = True
        self._wake()

    # ---- used by UpstreamResponse ---------------------------------------------------------

    async def next_chunk(self) -> bytes | None:
        """The next piece of body, or None at its end; raises if the answer broke off."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return (
            self.complete
            and self._keep_alive
            and self.transport is not None
            and (not self.transport.is_closing())
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _ends_at_close(self) -> bool:
        te = self.headers.get("Transfer-Encoding", "").lower()
        return "Content-Length" not in self.headers and "chunked" not in te

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        for waited in (self.headers_ready, self.done):
            if waited is not None and not waited.done():
                waited.set_exception(error)
                waited.exception()  # retrieved here: a waiter may be gone already
        self._wake()

    def _pass_on(self) -> None:
        """`relay`: hand what the last read produced to the sink; end the answer if it did."""
        assert self.sink is not None
        if not self.headers_ready.done() or self.error is not None:
            return  # nothing started yet, or it broke (`done` carries the error)
        self.sink.flush(self.complete)
        if self.complete and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class UpstreamResponse:
    """An upstream's answer: status and headers now, the body through `iter_chunks`."""

    def __init__(self, client: UpstreamClient, connection: _Connection) -> None:
        self._client = client
        self._connection: _Connection | None = connection
        self.status = connection.status
        self.reason = connection.reason
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(connection.headers)
        self._complete = False

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None once it is complete (the connection is then
        back in the pool). The same as `iter_chunks` without an async generator per answer."""
        connection = self._connection
        if connection is None:
            if self._complete:
                return None
            raise UpstreamConnectionError("the answer was closed before its end")
        chunk = await connection.next_chunk()
        if chunk is None:
            self._complete = True
            self.release()
        return chunk

    def close(self) -> None:
        """Stop reading: the connection is dropped (the upstream sees the client leave)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def release(self) -> None:
        """The body was read to its end: the connection goes back to the pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client.give_back(connection)


class UpstreamClient:
    """Pooled keep-alive connections per upstream `host:port`."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: URL,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        connect_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send the request and wait for the answer's headers. Raises
        UpstreamConnectionError (connect failure, or the upstream broke off)."""
        assert url.host is not None and url.port is not None
        head = _request_head(method, url, headers, body)
        connection = await self._exchange((url.host, url.port), head, body, connect_timeout)
        return UpstreamResponse(self, connection)

    async def relay(
        self,
        url: URL,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        sink: RelaySink,
        connect_timeout: float | None = None,
        headers_within: float | None = None,
    ) -> None:
        """POST the request and pass its answer to `sink` as it arrives; return once it is
        complete (the connection is then back in the pool). Raises UpstreamConnectionError
        as `request` does (also after the sink started: the answer broke off), and
        TimeoutError when no headers arrived within `headers_within` seconds."""
        assert url.host is not None and url.port is not None
        head = _request_head("POST", url, headers, body)
        headers_by = None
        if headers_within is not None:
            headers_by = asyncio.get_running_loop().time() + headers_within
        key = (url.host, url.port)
        connection = await self._exchange(key, head, body, connect_timeout, headers_by, sink)
        self.give_back(connection)

    async def _exchange(
        self,
        key: tuple[str, int],
        head: bytes,
        body: bytes,
        connect_timeout: float | None,
        headers_by: float | None = None,
        sink: RelaySink | None = None,
    ) -> _Connection:
        """Send the request and wait for the answer's headers (or, with a sink, for its
        end), on a pooled connection or a fresh one; the connection it was answered on."""
        for attempt in range(2):
            # A pooled connection is taken without awaiting (no coroutine per request).
            connection = self._pooled(key)
            if connection is None:
                async with asyncio.timeout_at(headers_by):
                    connection = await self._connect(key, connect_timeout)
            assert connection.transport is not None
            if sink is not None:
                connection.sink = sink
                connection.done = asyncio.get_running_loop().create_future()
                sink.bind(connection.transport)
            _send_request(connection.transport, head, body)
            try:
                # Not shielded: a cancelled request closes its connection below, so its
                # futures are never awaited again.
                if headers_by is not None and not connection.headers_ready.done():
                    async with asyncio.timeout_at(headers_by):
                        await connection.headers_ready
                await (connection.headers_ready if connection.done is None else connection.done)
            except UpstreamConnectionError:
                connection.close()
                if attempt == 0 and connection.reused and not connection.got_bytes:
                    continue  # the upstream had closed this idle connection: try a fresh one
                raise
            except BaseException:
                connection.close()
                raise
            finally:
                connection.sink = None  # an idle connection keeps no client alive
            return connection
        raise AssertionError("unreachable")  # pragma: no cover

    def give_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if self._closed or not connection.reusable() or len(idle) >= MAX_IDLE_PER_HOST:
            connection.close()
            return
        idle.append(connection)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def _pooled(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.reset()
                connection.reused = True
                return connection
        return None

    async def _connect(self, key: tuple[str, int], connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, protocol = await loop.create_connection(lambda: _Connection(key), *key)
        except (OSError, TimeoutError) as exc:
            host, port = key
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise UpstreamConnectionError(f"cannot connect to {host}:{port}: {reason}") from exc
        return protocol


def _send_request(transport: asyncio.Transport, head: bytes, body: bytes) -> None:
    if len(body) <= JOIN_BODY_BYTES:
        # One write, one send(): a second write costs a syscall (and on loopback the whole
        # delivery) per request, more than copying a small body.
        transport.write(head + body)
    else:
        transport.writelines((head, body))  # a large upload is not copied


_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _request_head(method: str, url: URL, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    has_host = False
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            continue  # never let a value split the request (header injection)
        lower = name.lower()
        if lower in _FRAMING:
            continue  # the body is framed here, once: never two framings (smuggling)
        has_host = has_host or lower == "host"
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"Host: {url.host_port_subcomponent}")  # brackets IPv6, omits :80
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
