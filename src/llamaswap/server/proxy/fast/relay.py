"""Serving one planned request: the same bookkeeping as the aiohttp path, then the relay.

In order, as the application's middlewares and `serving.serve_model` do it: the request
metrics cell, the in-flight registry, the activity recorder (`record_exchange`), the lease
(`router.acquire`: the same admission, queueing and errors), the upstream request on the
pooled client with the client's headers (hop-by-hop dropped, `X-Forwarded-For` appended,
`Host` kept), and the answer relayed as it arrives (`_Reply`, called from the upstream
connection's own callbacks: what one read brought goes out in one write, and the request's
task wakes once, when the answer is complete, not once per piece); each piece reaches the
recorder after it was handed to the client's transport. The lease is released when the last
byte is written, when the upstream fails, and when the client leaves (its connection's
task is cancelled, which also drops the upstream request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web
from yarl import URL

from llamaswap.errors import RequestError
from llamaswap.observe import metrics
from llamaswap.router import Lease
from llamaswap.server.access_log import emit as emit_access
from llamaswap.server.access_log import format_duration
from llamaswap.server.inflight import client_ip
from llamaswap.server.proxy.fast.plan import Plan
from llamaswap.server.proxy.fast.reply import error_bytes, response_head
from llamaswap.server.proxy.fast.request import FastRequest
from llamaswap.server.proxy.forward import ResponseHeaderTimeout, join_url, upstream_headers
from llamaswap.server.proxy.recording import Recorder, record_exchange, request_metadata
from llamaswap.server.responses import error_response, response_for_error
from llamaswap.server.state import AppState

__all__ = ["Client", "serve_planned"]

forward_log = logging.getLogger("llamaswap.forward")
access_log = logging.getLogger("llamaswap.access")
CLIENT_CLOSED = 499


class Client(Protocol):
    """The client's connection, as the relay writes to it."""

    sent: int  # bytes written so far, heads included (the access log's size)

    def send(self, data: bytes) -> None: ...

    def hold(self, resume: Callable[[], None]) -> bool:
        """True when the client does not keep up (its transport's buffer is above the
        high-water mark): `resume` is then called once it is below again."""

    def gone(self) -> bool: ...

    def close(self) -> None:
        """Close the connection once what was sent is flushed."""


class _Sent:
    """What `record_exchange` sees of an answer that was relayed (its row is complete)."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}


async def serve_planned(
    client: Client,
    request: FastRequest,
    state: AppState,
    plan: Plan,
    counters: metrics.Metrics | None,
) -> None:
    """Serve `request` and account for it (metrics, access log), whatever happens."""
    started = time.monotonic()
    cell = metrics.RequestCell()
    metrics.current_request().set(cell)  # this task's own context: the router sees it
    status = 500
    web_request = request.as_web_request()
    try:
        with state.inflight.track(web_request, plan.model_id, state.router.events):
            status = await _recorded(client, request, state, plan, cell)
    except RequestError as exc:
        answer = response_for_error(request.headers.get("Accept", ""), exc)
        status = answer.status
        _send_first(client, cell, error_bytes(answer, request.keep_alive))
    except asyncio.CancelledError:
        status = CLIENT_CLOSED  # the client left, or an operator cancelled the request
        client.close()
    finally:
        if counters is not None:
            counters.record_request(cell, request.path, status)
        _log_access(request, status, client.sent, time.monotonic() - started)


async def _recorded(
    client: Client, request: FastRequest, state: AppState, plan: Plan, cell: metrics.RequestCell
) -> int:
    async def leased(recorder: Recorder | None) -> web.StreamResponse:
        lease = await state.router.acquire(plan.model_id)
        request_metadata(request.as_web_request())["fifo_priority"] = str(
            state.config.fifo_priority(plan.model_id)
        )
        try:
            if state.before_forward is not None:
                await state.before_forward(plan.model_id)
            return await _forward(client, request, state, lease, plan, recorder, cell)
        finally:
            lease.release()

    web_request = request.as_web_request()
    sent = await record_exchange(web_request, state, plan.model_id, plan.path, plan.body, leased)
    return sent.status


async def _forward(
    client: Client,
    request: FastRequest,
    state: AppState,
    lease: Lease,
    plan: Plan,
    recorder: Recorder | None,
    cell: metrics.RequestCell,
) -> web.StreamResponse:
    url = join_url(lease.upstream, plan.path, request.query_string)
    headers = upstream_headers(request.headers, request.remote)
    if request.host:
        headers["Host"] = request.host
    if recorder is not None:
        recorder.request_headers(headers)
    assert state.upstream_client is not None
    reply = _Reply(client, cell, recorder, request.keep_alive)
    try:
        await state.upstream_client.relay(
            URL(url, encoded=True),
            headers.items(),
            plan.body,
            reply,
            lease.connect_timeout,
            lease.header_timeout or None,  # 0 (the default) means no limit
        )
    except (TimeoutError, OSError) as exc:
        if reply.status:
            # The upstream broke off: the client's answer cannot be completed, so its
            # connection is closed after what was sent (the truncation is visible to it).
            forward_log.info("stream to/from %s ended early: %s", url, exc)
            if recorder is not None and client.gone():
                recorder.client_left()
            client.close()
            return _as_response(_Sent(reply.status))
        reason: Exception = exc
        if isinstance(exc, TimeoutError):
            reason = ResponseHeaderTimeout(lease.header_timeout)
        forward_log.warning("upstream request to %s failed: %s", url, reason)
        status = 504 if isinstance(reason, ResponseHeaderTimeout) else 502
        failure = error_response(
            request.headers.get("Accept", ""), status, f"upstream request failed: {reason}"
        )
        _send_first(client, cell, error_bytes(failure, request.keep_alive))
        return failure  # `record_exchange` records it as the aiohttp path's would be
    return _as_response(_Sent(reply.status))


class _Reply:
    """The client's side of a relayed answer (`upstream_client.RelaySink`).

    Called from the upstream connection's callbacks: what one read from the upstream
    produced goes to the client in one write (never held for more), the head with it; an
    answer without `Content-Length` is sent chunked, each piece framed as it came. Each
    piece reaches the recorder after it was handed to the client's transport. While the
    client does not keep up, reading from the upstream pauses."""

    __slots__ = (
        "cell",
        "chunked",
        "client",
        "head",
        "keep_alive",
        "pieces",
        "recorder",
        "source",
        "status",
    )

    def __init__(
        self,
        client: Client,
        cell: metrics.RequestCell,
        recorder: Recorder | None,
        keep_alive: bool,
    ) -> None:
        self.client = client
        self.cell = cell
        self.recorder = recorder
        self.keep_alive = keep_alive
        self.status = 0  # set once the upstream's head is in
        self.head = b""  # the client's head, until it is sent
        self.chunked = False
        self.pieces: list[bytes] = []
        self.source: asyncio.Transport | None = None

    def bind(self, source: asyncio.Transport) -> None:
        self.source = source

    def start(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        if self.recorder is not None:
            self.recorder.response_started(status, headers)
        self.status = status
        self.head, self.chunked = response_head(status, reason, headers, self.keep_alive)

    def piece(self, data: bytes) -> None:
        self.pieces.append(data)

    def flush(self, complete: bool) -> None:
        pieces = self.pieces
        out = [self.head] if self.head else []
        if self.chunked:
            out += [b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces if piece]
            if complete:
                out.append(b"0\r\n\r\n")
        else:
            out += pieces
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            if self.head:  # the first write of the answer
                self.head = b""
                _send_first(self.client, self.cell, data)
            else:
                self.client.send(data)
        if self.recorder is not None:
            for piece in pieces:
                self.recorder.chunk(piece)
        self.pieces = []
        source = self.source
        if not complete and source is not None and self.client.hold(self._resume):
            source.pause_reading()

    def _resume(self) -> None:
        if self.source is not None and not self.source.is_closing():
            self.source.resume_reading()


def _send_first(client: Client, cell: metrics.RequestCell, data: bytes) -> None:
    if cell.first_byte is None:
        cell.first_byte = time.monotonic()
    client.send(data)


def _as_response(sent: _Sent) -> web.StreamResponse:
    # `record_exchange` reads only `status` and `headers` of what the call returns, and
    # only when the recorder did not see the answer itself (it did here).
    return sent  # type: ignore[return-value]


def _log_access(request: FastRequest, status: int, size: int, seconds: float) -> None:
    """The line `access_log.AccessLogger` writes for the same request."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    ip = client_ip(request.as_web_request())
    agent = request.headers.get("User-Agent", "")
    line = (
        f'Request {ip} "{request.method} {request.raw_path} HTTP/1.1" '
        f'{status} {size} "{agent}" {format_duration(seconds)}'
    )
    emit_access(access_log, logging.INFO, line)
