"""The connection handler in front of aiohttp's: serves plain model requests, hands over
the rest.

Bytes are collected until a whole head (and, for a request the fast path may serve, its
`Content-Length` body) is there; nothing is consumed before the request is known to be
ours. The first request that is not (see `plan`) is handed, with every byte not yet
consumed, to a fresh aiohttp `RequestHandler` that takes over the transport for the rest of
the connection's life: from then on aiohttp answers it exactly as without the fast path.

One request at a time per connection: bytes of a pipelined next request wait in the buffer
(reading pauses when it grows) until the answer in progress is complete. The slow-client
limits of `server.protocol` hold here too (read from there at each use): the first head
within `HEAD_TIMEOUT_S`, a body within `BODY_TIMEOUT_S` of its head, the next head within
`KEEPALIVE_TIMEOUT_S` of the last answer; past them the connection is closed. At most
`MAX_CONNECTIONS` connections are open, counting aiohttp's. When the client leaves, the
request's task is cancelled (its lease released, its upstream request dropped, its row
recorded as 499).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from aiohttp import web

from llamaswap.observe import metrics
from llamaswap.server import body_deadline
from llamaswap.server import protocol as edge
from llamaswap.server.proxy.fast.head import NOT_OURS, NOT_YET, head_end, parse_head
from llamaswap.server.proxy.fast.plan import MAX_FAST_BODY, plan_request, route_is_fast
from llamaswap.server.proxy.fast.relay import serve_planned
from llamaswap.server.proxy.fast.request import FastRequest
from llamaswap.server.state import AppState

__all__ = ["Front", "FrontProtocol"]

log = logging.getLogger("llamaswap.server.protocol")

# Unconsumed bytes at which reading pauses while an answer is in progress.
_PAUSE_BYTES = MAX_FAST_BODY + 64 * 1024


class Front:
    """What every fast connection shares: the application's handler factory and state."""

    def __init__(
        self, server: web.Server, state: AppState, counters: metrics.Metrics | None
    ) -> None:
        self.server = server  # aiohttp's: its handlers take over what is not served here
        self.state = state
        self.counters = counters
        self.connections: set[FrontProtocol] = set()
        self.closing = False

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    async def shutdown(self, drain_seconds: float) -> None:
        """Close idle connections now; let answers in progress finish within `drain_seconds`."""
        self.closing = True
        busy = []
        for connection in list(self.connections):
            if connection.task is None:
                connection.close()
            else:
                busy.append(connection.task)
        if busy:
            _, late = await asyncio.wait(busy, timeout=drain_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)


class FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self._remote: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time; see `_set_timer`
        self._on_writable: Callable[[], None] | None = None  # see `hold`
        self._writing_paused = False
        self._reading_paused = False
        self._keep_open = True
        self._awaiting_body = False

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        front = self.front
        if len(front.connections) + len(front.server.connections) >= edge.MAX_CONNECTIONS:
            log.warning("more than %d open connections: closing a new one", edge.MAX_CONNECTIONS)
            transport.close()
            return
        if front.closing:
            self._hand_over()  # shutting down: aiohttp's handler answers as it does then
            return
        self.front.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._set_timer(edge.HEAD_TIMEOUT_S)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next()
        elif len(self.buffer) > _PAUSE_BYTES and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self._drop_timer()
        self.transport = None
        if self.task is not None:
            self.task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # ---- relay.Client -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.sent += len(data)

    def hold(self, resume: Callable[[], None]) -> bool:
        if not self._writing_paused or self.transport is None:
            return False
        self._on_writable = resume
        return True

    def gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        self._keep_open = False
        if self.transport is not None:
            self.transport.close()

    # ---- requests -----------------------------------------------------------------------------

    def _next(self) -> None:
        """Start serving the buffered request if it is complete and ours; hand over if it
        is not ours; otherwise wait for more bytes."""
        end = head_end(self.buffer)
        if end == NOT_YET:
            return
        head = parse_head(bytes(self.buffer[:end])) if end != NOT_OURS else None
        if head is None or not route_is_fast(head):
            self._hand_over()
            return
        total = end + head.content_length
        if len(self.buffer) < total:
            if not self._awaiting_body:  # one deadline from the head, not one per piece
                self._awaiting_body = True
                self._set_timer(body_deadline.BODY_TIMEOUT_S)
            return
        self._awaiting_body = False
        body = bytes(self.buffer[end:total])
        state = self.front.state
        plan = plan_request(state, head, body)
        if plan is None:
            self._hand_over()
            return
        del self.buffer[:total]
        self._cancel_timer()
        assert self.transport is not None
        request = FastRequest(head, self._remote, self.transport)
        self._keep_open = head.keep_alive
        self.sent = 0
        self.task = asyncio.get_running_loop().create_task(
            serve_planned(self, request, state, plan, self.front.counters)
        )
        self.task.add_done_callback(self._served)

    def _served(self, _: asyncio.Task[None]) -> None:
        self.task = None
        if self.transport is None or self.transport.is_closing():
            return
        if not self._keep_open or self.front.closing:
            self.transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        self._set_timer(edge.KEEPALIVE_TIMEOUT_S)
        if self.buffer:
            self._next()

    def _hand_over(self) -> None:
        """Give the connection, with the bytes not consumed, to aiohttp's handler."""
        self.front.connections.discard(self)
        self._drop_timer()
        transport = self.transport
        assert transport is not None
        self.transport = None
        if self._reading_paused:
            transport.resume_reading()
        handler = self.front.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.buffer and not transport.is_closing():
            handler.data_received(bytes(self.buffer))
        self.buffer.clear()

    # ---- timers -------------------------------------------------------------------------------

    # One deadline at a time. Requests on a keep-alive connection move it twice each (set
    # after an answer, cleared at the next head); the loop's timer is not re-armed for that:
    # it stays armed and, when it fires, re-arms for a deadline that moved later.

    def _set_timer(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + seconds
        if self._timer is not None and self._timer.when() <= self._deadline:
            return  # fires first; `_overdue` then waits for the rest
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._deadline, self._overdue)

    def _cancel_timer(self) -> None:
        self._deadline = None  # a timer still armed finds no deadline and ends

    def _drop_timer(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overdue(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._overdue)
            return
        self._deadline = None
        if self.task is None and self.transport is not None:
            self.transport.close()  # a head or body that did not arrive in time

    def _wake_writer(self) -> None:
        resume, self._on_writable = self._on_writable, None
        if resume is not None:
            resume()


def metrics_of(app: web.Application) -> metrics.Metrics | None:
    """The application's request counters (absent in apps built without them)."""
    from llamaswap.server.api.observe_routes import METRICS  # noqa: PLC0415 - app wiring

    return app.get(METRICS)
