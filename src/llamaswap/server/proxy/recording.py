"""Recording model requests into the activity store and the capture buffer (spec §6.1).

Which requests: POSTs to a model route (body routes and versionless routes), and
`/upstream/<model>/<path>` whose remainder is one of them (§5.4 "Metrics").

How, without slowing the stream: the forwarder hands every chunk to the `Recorder` *after*
writing it to the client; the recorder only appends it to a bounded copy (the last
`COPY_LIMIT` bytes: usage data is at the end of a stream). Everything else happens once the
exchange is over, after the handler returned: parsing, the store insert (see
`observe.activity` for where), the capture, the `activity` event and the token counters.
The exchanges that end in one pass of the event loop are recorded together by one callback
on its next pass; the common case (a small copy, the in-memory store) awaits nothing there,
so a request costs no task of its own. A large copy (parsed on a worker thread) or a file
store (written on its own thread) is finished in a task.
Upstream `Accept-Encoding` is reduced to gzip/deflate so that the copy can be decoded.

A request whose client hung up before the whole answer was written (it disconnected, or its
handler was cancelled from `/api/inflight`) is recorded with status 499 (nginx's "client
closed request", as llama-swap records it) and what was seen of the answer until then.

A copy that outgrew `COPY_LIMIT` is parsed only if it is an uncompressed event stream (its
tail holds the usage); otherwise the row is minimal. Such an exchange gets no capture.

Request metadata: `request_metadata(request)` is the request's `dict[str, str]`, copied into
its row. `fifo_priority` is set when the lease is granted; other code (selectors) may add
keys before the request is served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from multidict import CIMultiDict

from llamaswap.errors import RequestError
from llamaswap.observe import metrics
from llamaswap.observe.activity import ActivityEntry
from llamaswap.observe.captures import Capture, capture_fields
from llamaswap.observe.tokens import (
    ParsedResponse,
    TokenMetrics,
    filter_accept_encoding,
    parse_response,
)
from llamaswap.server.auth import redact_headers
from llamaswap.server.model_paths import RECORDED_PATHS
from llamaswap.server.proxy.forward import client_gone
from llamaswap.server.state import AppState

__all__ = [
    "COPY_LIMIT",
    "RECORDED_PATHS",
    "Recorder",
    "record_exchange",
    "recorded_route",
    "request_metadata",
]

log = logging.getLogger("llamaswap.recording")

COPY_LIMIT = 4 * 1024 * 1024
CLIENT_CLOSED = 499  # nginx's "client closed request"
CLIENT_CLOSED_MESSAGE = "client closed the request before the answer ended"
# Bodies above this are parsed on a worker thread, not on the event loop.
THREAD_PARSE_BYTES = 64 * 1024
_METADATA_KEY: web.RequestKey[dict[str, str]] = web.RequestKey("llamaswap_metadata")
# Rows finished in a task (cancelled requests, large copies, a file store): kept referenced.
_finishing: set[asyncio.Task[None]] = set()
# Exchanges that ended in this pass of each loop, recorded together on the next (`_drain`).
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Recorder]] = (
    weakref.WeakKeyDictionary()
)


def request_metadata(request: web.Request) -> dict[str, str]:
    """The request's metadata map (created empty on first use), copied into its row."""
    meta = request.get(_METADATA_KEY)
    if meta is None:
        meta = request[_METADATA_KEY] = {}
    return meta


def recorded_route(method: str, request_path: str, forwarded_path: str) -> str | None:
    """The model route a request is recorded under (the path its capture mask is chosen by),
    or None when it is not recorded."""
    if method != "POST":
        return None
    route = forwarded_path if request_path.startswith("/upstream/") else request_path
    return route if route in RECORDED_PATHS else None


class Recorder:
    """One recorded exchange: a `forward.ResponseTap` plus what the row needs afterwards."""

    def __init__(
        self,
        request: web.Request,
        state: AppState,
        model: str,
        route: str,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        cell = metrics.current_request().get()
        # From the request's arrival (the metrics middleware), as llama-swap [H] measures.
        self.started = cell.started if cell is not None else time.monotonic()
        self.request = request
        self.state = state
        self.model = model
        self.route = route
        self.req_body = body or b""
        req_headers = redact_headers(request.headers.items())
        if headers:
            req_headers.update(headers)
        self.req_headers = {str(k): v for k, v in req_headers.items()}
        self.status: int | None = None
        self.resp_headers: dict[str, str] = {}
        self._copy: deque[bytes] = deque()
        self._copied = 0
        self.truncated = False
        self.error: tuple[int, str] | None = None
        self.left: str | None = None  # why the client is gone before the end, if it is
        self._final_status = 200  # the row's status, set when the row is built

    # ---- ResponseTap ------------------------------------------------------------------------

    def request_headers(self, headers: CIMultiDict[str]) -> None:
        accepted = headers.get("Accept-Encoding")
        if accepted is None:
            return
        kept = filter_accept_encoding(accepted)
        if kept:
            headers["Accept-Encoding"] = kept
        else:
            del headers["Accept-Encoding"]

    def response_started(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.resp_headers = {str(k): v for k, v in redact_headers(headers.items()).items()}

    def chunk(self, data: bytes) -> None:
        self._copy.append(data)
        self._copied += len(data)
        while self._copied > COPY_LIMIT and len(self._copy) > 1:
            self._copied -= len(self._copy.popleft())
            self.truncated = True
        if self._copied > COPY_LIMIT:  # one huge chunk: keep its tail
            self._copy[0] = self._copy[0][-COPY_LIMIT:]
            self._copied = COPY_LIMIT
            self.truncated = True

    def client_left(self, why: str = CLIENT_CLOSED_MESSAGE) -> None:
        self.left = why

    # ---- outcomes ---------------------------------------------------------------------------

    def fail(self, status: int, message: str) -> None:
        """The request ended with our own error (rejected, failed start) before any upstream
        answer was relayed."""
        self.error = (status, message)

    def settle(self, response: web.StreamResponse | None) -> None:
        """Fill in what the forwarder could not report: a plain error response it returned."""
        if self.status is not None or response is None:
            return
        self.status = response.status
        self.resp_headers = {str(k): v for k, v in response.headers.items()}
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            self.chunk(response.body)

    async def finish(self) -> None:
        """Parse, store, capture and announce the row. Never raises."""
        try:
            wall_ms = self._wall_ms()
            parse, size = self._parser(wall_ms)
            parsed = await asyncio.to_thread(parse) if size > THREAD_PARSE_BYTES else parse()
            entry = await self.state.activity.insert_async(self._entry(parsed, wall_ms))
            self._announce(entry.id, entry.tokens, parsed)
        except Exception:
            log.exception("could not record %s %s", self.request.method, self.request.path)

    def finishes_inline(self) -> bool:
        """Whether `finish_inline` may do the whole work here: a copy small enough to parse
        on the loop and a store that inserts without a thread (in memory)."""
        return self._copied <= THREAD_PARSE_BYTES and self.state.activity.in_memory

    def finish_inline(self) -> None:
        """`finish` without awaiting anything (see `finishes_inline`). Never raises."""
        try:
            wall_ms = self._wall_ms()
            parsed = self._parser(wall_ms)[0]()
            entry = self._entry(parsed, wall_ms)
            self._announce(self.state.activity.insert_id(entry), entry.tokens, parsed)
        except Exception:
            log.exception("could not record %s %s", self.request.method, self.request.path)

    def _wall_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def _entry(self, parsed: ParsedResponse, wall_ms: int) -> ActivityEntry:
        """The row, with the outcome our own errors and a departed client impose."""
        status = self.status if self.status is not None else 200
        if self.error is not None:
            status, message = self.error
            parsed = ParsedResponse(TokenMetrics(), wall_ms, message, b"")
        elif self.left is not None:
            # Keep the tokens of the part that was sent; the upstream's status is moot.
            status = CLIENT_CLOSED
            parsed = dataclasses.replace(parsed, error_msg=self.left)
        self._final_status = status
        return ActivityEntry(
            timestamp=time.time(),
            model=self.model,
            req_path=self.request.path,
            resp_content_type=self.resp_headers.get("Content-Type", ""),
            resp_status_code=status,
            tokens=parsed.tokens,
            duration_ms=parsed.duration_ms,
            error_msg=parsed.error_msg,
            metadata=dict(request_metadata(self.request)),
        )

    def _announce(self, row_id: int, tokens: TokenMetrics, parsed: ParsedResponse) -> None:
        """Token counters, the capture and the `activity` event of the row stored as `row_id`
        (0: not stored, recording is paused)."""
        state = self.state
        bus = state.router.events
        metrics.tokens_recorded(bus, self.model, tokens.input_tokens, tokens.output_tokens)
        if row_id == 0:
            return  # recording is paused (the store said so once, as a WARNING)
        if state.captures.enabled and not self.truncated:
            resp_headers = {
                k: v for k, v in self.resp_headers.items() if k.lower() != "content-encoding"
            }
            state.captures.add(
                Capture.build(
                    row_id,
                    self.request.path,
                    capture_fields(self.route, self._final_status),
                    req_headers=self.req_headers,
                    req_body=self.req_body,
                    resp_headers=resp_headers,
                    resp_body=parsed.body if self.error is None else b"",
                )
            )
        bus.publish("activity", {"id": row_id})

    def _parser(self, wall_ms: int) -> tuple[Callable[[], ParsedResponse], int]:
        """The parse of the copy (to run here or on a thread) and the size of the copy."""
        content_type = self.resp_headers.get("Content-Type", "")
        encoding = self.resp_headers.get("Content-Encoding", "")
        if self.truncated and (encoding or "text/event-stream" not in content_type.lower()):
            return (lambda: ParsedResponse(TokenMetrics(), wall_ms, "", b"")), 0
        body = b"".join(self._copy)
        self._copy.clear()

        def run() -> ParsedResponse:
            return parse_response(
                path=self.route,
                status=self.status if self.status is not None else 200,
                content_type=content_type,
                content_encoding=encoding,
                body=body,
                wall_ms=wall_ms,
            )

        return run, len(body)


Call = Callable[["Recorder | None"], Awaitable[web.StreamResponse]]


async def record_exchange(
    request: web.Request,
    state: AppState,
    model: str,
    forwarded_path: str,
    body: bytes | None,
    call: Call,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Run `call(recorder)` (which forwards with the recorder as its tap) and record the
    exchange when it is a recorded route; `call(None)` otherwise.

    RequestErrors are recorded with their status and message, then re-raised. When the
    client leaves before the answer ended (at any point: queued, loading or mid-stream),
    the exchange is recorded as 499 with the part seen so far, in the background.
    """
    route = recorded_route(request.method, request.path, forwarded_path)
    if route is None:
        return await call(None)
    recorder = Recorder(request, state, model, route, body, headers)
    try:
        response = await call(recorder)
    except RequestError as exc:
        recorder.fail(exc.status, exc.message)
        await recorder.finish()
        raise
    except asyncio.CancelledError as exc:
        # The handler is cancelled when its client disconnects, or from /api/inflight.
        reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else None
        recorder.client_left(reason or CLIENT_CLOSED_MESSAGE)
        _finish_later(recorder)
        raise
    except ConnectionError:
        if client_gone(request):  # a write to the client failed: it hung up
            recorder.client_left()
            _finish_later(recorder)
        raise
    recorder.settle(response)
    # After the handler returns: the client's keep-alive connection is free for its next
    # request while the row is parsed and stored.
    _finish_soon(recorder)
    return response


def _finish_later(recorder: Recorder) -> None:
    task = asyncio.get_running_loop().create_task(recorder.finish())
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


def _finish_soon(recorder: Recorder) -> None:
    """Queue a finished exchange for the loop's next pass, where every exchange that ended
    in this pass is recorded by one callback (`_drain`) rather than a task each."""
    loop = asyncio.get_running_loop()
    pending = _pending.get(loop)
    if pending is None:
        pending = _pending[loop] = []
    if not pending:
        loop.call_soon(_drain, pending)
    pending.append(recorder)


def _drain(pending: list[Recorder]) -> None:
    batch = pending[:]
    pending.clear()
    for recorder in batch:
        if recorder.finishes_inline():
            recorder.finish_inline()
        else:  # a large copy (parsed on a thread) or a file store (its own thread)
            _finish_later(recorder)
