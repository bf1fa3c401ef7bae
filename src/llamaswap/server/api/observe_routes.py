"""Observation routes: `/logs`, `/logs/stream[/<id>]`, `/api/events` (SSE) and `/metrics`
(plus the activity routes of `activity_routes`).

`add_routes(app)` also installs what feeds them: the `proxy` log buffer (a logging handler on
the `llamaswap` logger, attached for the app's lifetime), the per-app Prometheus registry and
the middleware that counts requests. Every long-lived stream registers what it reads from,
and the app's shutdown closes them all, so streams end before the server waits for handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import orjson
from aiohttp import web

from llamaswap.errors import BadRequest
from llamaswap.observe import metrics
from llamaswap.observe.events import EventBus, Feed
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.server.api import activity_routes
from llamaswap.server.api.devices_view import memory_view
from llamaswap.server.api.listing import capability_fields
from llamaswap.server.api.scheduling_view import residency_fields, scheduling_fields
from llamaswap.server.state import STATE, AppState

__all__ = [
    "LogBufferHandler",
    "add_routes",
    "format_time",
    "model_status",
    "recent_history",
    "ui_config",
]

INVALID_LOGGER = "invalid logger. Use 'proxy', 'upstream' or a model's ID"
STREAM_HEADERS = {
    "Content-Type": "text/plain",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}
EVENTS_QUEUE = 1024  # per /api/events client, as llama-swap [H]; overflow is dropped
LEASE_COUNTS_EVERY_S = 0.05  # the latest in-flight counts reach the UI within this
LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "ERROR"}

log = logging.getLogger("llamaswap.observe")


# Go time layouts named by `logTimeFormat` (spec §1), as strftime patterns where they map.
def _stamp(t: dt.datetime, clock: str) -> str:
    """Go's `Jan _2 15:04:05` family: the day padded with a space."""
    return t.strftime("%b ") + f"{t.day:>2} " + t.strftime(clock)


_TIME_FORMATS: dict[str, Callable[[dt.datetime], str]] = {
    "ansic": lambda t: t.strftime("%a ") + _stamp(t, "%H:%M:%S %Y"),
    "unixdate": lambda t: t.strftime("%a ") + _stamp(t, "%H:%M:%S %Z %Y"),
    "rfc822": lambda t: t.strftime("%d %b %y %H:%M %Z"),
    "rfc822z": lambda t: t.strftime("%d %b %y %H:%M %z"),
    "rfc850": lambda t: t.strftime("%A, %d-%b-%y %H:%M:%S %Z"),
    "rfc1123": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %Z"),
    "rfc1123z": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %z"),
    "rfc3339": lambda t: t.isoformat(timespec="seconds"),
    "rfc3339nano": lambda t: t.isoformat(timespec="microseconds"),
    "kitchen": lambda t: t.strftime("%I:%M%p").lstrip("0"),
    "stamp": lambda t: _stamp(t, "%H:%M:%S"),
    "stampmilli": lambda t: _stamp(t, "%H:%M:%S.") + f"{t.microsecond // 1000:03d}",
    "stampmicro": lambda t: _stamp(t, "%H:%M:%S.%f"),
    "stampnano": lambda t: _stamp(t, "%H:%M:%S.%f000"),
}


def format_time(layout: str, when: float) -> str:
    """`when` in the `logTimeFormat` layout; "" for an empty or unknown layout."""
    render = _TIME_FORMATS.get(layout.lower())
    if render is None:
        return ""
    return render(dt.datetime.fromtimestamp(when).astimezone())


class LogBufferHandler(logging.Handler):
    """Writes `[<time> ][LEVEL] message\\n` records into a `LogBuffer` (the `proxy` log).

    Records from other threads are handed to the event loop (buffers are loop-only).
    """

    def __init__(
        self,
        buffer: LogBuffer,
        loop: asyncio.AbstractEventLoop,
        time_format: Callable[[], str] = lambda: "",
    ) -> None:
        super().__init__()
        self.buffer = buffer
        self._loop = loop
        self._time_format = time_format

    def format(self, record: logging.LogRecord) -> str:
        level = LEVEL_NAMES.get(record.levelname, record.levelname)
        stamp = format_time(self._time_format(), record.created)
        text = f"{stamp} " if stamp else ""
        text += f"[{level}] {record.getMessage()}\n"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info) + "\n"
        return text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.format(record).encode("utf-8", "replace")
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                self.buffer.write(data)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.buffer.write, data)
        except Exception:
            self.handleError(record)


class _Closable(Protocol):
    def close(self) -> None: ...


PROXY_LOG = web.AppKey("llamaswap_proxy_log", LogBuffer)
METRICS = web.AppKey("llamaswap_metrics", metrics.Metrics)
_OPEN: web.AppKey[set[_Closable]] = web.AppKey("llamaswap_open_streams")
_HANDLER: web.AppKey[list[LogBufferHandler]] = web.AppKey("llamaswap_log_handler")


# ---- where things are -----------------------------------------------------------------------


def _bus(state: AppState) -> EventBus:
    # The server's bus, shared by every router it runs (it outlives config reloads).
    return state.router.events


def upstream_log(state: AppState) -> LogBuffer:
    """The server-wide `upstream` buffer: the parent of every model's buffer."""
    return state.router.upstream_log


def _logger_buffer(app: web.Application, name: str) -> LogBuffer | None:
    """The buffer `/logs/stream/<name>` follows; None when `name` is no logger."""
    state = app[STATE]
    if name == "":
        mode = state.config.log_to_stdout
        if mode == "upstream":
            return upstream_log(state)
        return app[PROXY_LOG] if mode in ("proxy", "both") else LogBuffer()
    if name == "proxy":
        return app[PROXY_LOG]
    if name == "upstream":
        return upstream_log(state)
    model_id = state.config.resolve_model(name)
    if model_id is None:
        return None
    return state.router.logs.get(model_id)


# ---- /logs ---------------------------------------------------------------------------------


async def logs(request: web.Request) -> web.StreamResponse:
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    buffer = _logger_buffer(request.app, "")
    assert buffer is not None
    return web.Response(body=buffer.history(), content_type="text/plain")


async def logs_stream(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("logger", "")
    buffer = _logger_buffer(request.app, name)
    if buffer is None:
        raise BadRequest(INVALID_LOGGER)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    response.enable_chunked_encoding()
    history = b"" if "no-history" in request.query else buffer.history()
    if "no-follow" in request.query:  # one logger's history (`llamaswap logs MODEL`)
        return web.Response(body=history, content_type="text/plain")
    follow = buffer.subscribe()  # right after the history read: nothing missed or doubled
    with _held_open(request.app, follow):
        await _stream_out(request, response, history, follow)
    return response


@contextlib.contextmanager
def _held_open(app: web.Application, *feeds: _Closable) -> Iterator[None]:
    """Register `feeds` for the app's shutdown to close; close them when the block ends."""
    open_streams = app[_OPEN]
    open_streams.update(feeds)
    try:
        yield
    finally:
        for feed in feeds:
            feed.close()
            open_streams.discard(feed)


async def _stream_out(
    request: web.Request, response: web.StreamResponse, first: bytes, feed: AsyncIterator[bytes]
) -> None:
    """Send the headers, `first`, then each chunk of `feed` until it ends or the client leaves."""
    try:
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in feed:
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the client left


# ---- /api/events ---------------------------------------------------------------------------


def model_status(state: AppState) -> list[dict[str, Any]]:
    """The `modelStatus` payload (spec §5.9 [H]): every local model sorted by id, with its
    capabilities when configured, then every peer model (`<peer>/<model>`, no process)."""
    out = []
    for model_id in sorted(state.config.models):
        model = state.config.models[model_id]
        entry: dict[str, Any] = {
            "id": model_id,
            "name": model.name,
            "description": model.description,
            "state": state.router.state(model_id).value,
            "unlisted": model.unlisted,
            "peerID": "",
            **scheduling_fields(state.router, model_id),
            **residency_fields(state.config, state.router, model_id),
        }
        if model.aliases:
            entry["aliases"] = list(model.aliases)
        fields = capability_fields(model.capabilities)
        for key in ("capabilities", "context_length"):
            if key in fields:
                entry[key] = fields[key]
        out.append(entry)
    for peer_id in sorted(state.config.peers):
        for peer_model in state.config.peers[peer_id].models:
            out.append(
                {
                    "id": f"{peer_id}/{peer_model}",
                    "name": "",
                    "description": "",
                    "state": "stopped",
                    "unlisted": False,
                    "peerID": peer_id,
                }
            )
    return out


def recent_history(bus: EventBus, now: float | None = None) -> dict[str, Any]:
    """The `history` payload: the latest swaps and process state changes (the bus keeps
    them), oldest first, each as its `swap` / `modelState` event plus `at` (Unix seconds) and
    `ago_s` (seconds before `now`, for a client whose clock differs from ours)."""
    when = time.time() if now is None else now

    def kept(kind: str) -> list[dict[str, Any]]:
        return [
            {**k.event.data, "at": k.at, "ago_s": round(max(0.0, when - k.at), 3)}
            for k in bus.recent(kind)
            # a reload's marker (`id` None) is no model's change
            if isinstance(k.event.data, dict) and k.event.data.get("id", "") is not None
        ]

    return {"swaps": kept("swap"), "states": kept("modelState")}


def ui_config(state: AppState) -> dict[str, Any]:
    """The `uiConfig` payload: what the UI shows as a session id on in-flight rows."""
    return {"activity": {"session_id": list(state.config.ui.activity.session_id)}}


def sse_frame(kind: str, payload: Any) -> bytes:
    """`event:message` frame whose data is `{"type":kind,"data":"<payload as JSON text>"}`."""
    body = orjson.dumps({"type": kind, "data": orjson.dumps(payload).decode()})
    return b"event:message\ndata:" + body + b"\n\n"


def _log_frame(source: str, chunk: bytes) -> bytes:
    return sse_frame("logData", {"source": source, "data": chunk.decode("utf-8", "replace")})


async def _pump(
    source: AsyncIterator[Any], render: Callable[[Any], bytes | None], out: Feed[bytes]
) -> None:
    """Copy `source` into `out` (dropping when full); close `out` when `source` ends."""
    try:
        async for item in source:
            try:
                frame = render(item)
            except Exception:  # one unrenderable event must not end the client's feed
                log.exception("could not render event %r", item)
                continue
            if frame is not None:
                out.offer(frame)
    finally:
        out.close()


async def api_events(request: web.Request) -> web.StreamResponse:
    app = request.app
    state = app[STATE]
    proxy = app[PROXY_LOG]
    upstream = upstream_log(state)
    out: Feed[bytes] = Feed(EVENTS_QUEUE)
    # Subscribe, then snapshot, with no await between: nothing is missed or doubled.
    bus_sub = _bus(state).subscribe(
        EVENTS_QUEUE,
        kinds=(
            "modelState",
            "modelStatusChanged",
            "leases",
            "swap",
            "inflight",
            "queue",
            "profileChanged",
            "activity",
            "eviction",
        ),
    )
    proxy_sub = proxy.subscribe()
    upstream_sub = upstream.subscribe()
    first = b"".join(
        (
            sse_frame("modelStatus", model_status(state)),
            sse_frame("history", recent_history(_bus(state))),
            _log_frame("proxy", proxy.history()),
            _log_frame("upstream", upstream.history()),
            sse_frame("inflight", {"operation": "snapshot", "requests": state.inflight.snapshot()}),
            sse_frame("profileChanged", {"active": state.active_profile}),
            sse_frame("uiConfig", ui_config(state)),
            sse_frame("memory", memory_view(state)),
        )
    )

    loop = asyncio.get_running_loop()
    lease_flush: asyncio.TimerHandle | None = None

    def flush_lease_counts() -> None:
        nonlocal lease_flush
        lease_flush = None
        out.offer(sse_frame("modelStatus", model_status(app[STATE])))

    def on_event(event: Any) -> bytes | None:
        nonlocal lease_flush
        if event.kind == "leases":
            # A lease taken or released (two per request): under load, one modelStatus per
            # LEASE_COUNTS_EVERY_S carries the latest counts instead of one per request.
            if lease_flush is None:
                lease_flush = loop.call_later(LEASE_COUNTS_EVERY_S, flush_lease_counts)
            return None
        if event.kind in ("modelState", "modelStatusChanged"):
            # Device memory follows the states (and the measurements) of the models.
            return sse_frame("modelStatus", model_status(app[STATE])) + sse_frame(
                "memory", memory_view(app[STATE])
            )
        if event.kind == "eviction":
            return sse_frame("memory", memory_view(app[STATE]))
        if event.kind == "queue":  # queue depths per model live in modelStatus
            return sse_frame("queue", event.data) + sse_frame(
                "modelStatus", model_status(app[STATE])
            )
        frame = sse_frame(event.kind, event.data)
        if event.kind == "profileChanged":  # [H]: the pins change what a name means
            frame += sse_frame("modelStatus", model_status(app[STATE]))
        return frame

    pumps = [
        asyncio.create_task(_pump(bus_sub, on_event, out)),
        asyncio.create_task(_pump(proxy_sub, lambda c: _log_frame("proxy", c), out)),
        asyncio.create_task(_pump(upstream_sub, lambda c: _log_frame("upstream", c), out)),
    ]
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        with _held_open(app, out, bus_sub, proxy_sub, upstream_sub):
            await _stream_out(request, response, first, out)
    finally:
        if lease_flush is not None:
            lease_flush.cancel()
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    return response


# ---- /metrics and request metrics ----------------------------------------------------------


async def prometheus(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


@web.middleware
async def request_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Counts every request by model (learned from its lease), route and final status."""
    cell = metrics.RequestCell()
    token = metrics.current_request().set(cell)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client left (nginx's code)
        raise
    finally:
        metrics.current_request().reset(token)
        request.app[METRICS].record_request(cell, _route_label(request), status)


async def _on_prepare(_: web.Request, __: web.StreamResponse) -> None:
    cell = metrics.current_request().get()
    if cell is not None and cell.first_byte is None:
        cell.first_byte = time.monotonic()


# ---- wiring --------------------------------------------------------------------------------


def _snapshot(app: web.Application) -> metrics.Snapshot:
    state = app[STATE]
    router = state.router
    models = list(state.config.models)
    return metrics.Snapshot(
        queue_depth=router.queue_depth(),
        leases={m: router.lease_count(m) for m in models},
        states={m: router.state(m).value for m in models},
        queued={m: router.queued(m) for m in models},
        load_seconds={m: s for m in models if (s := router.load_time(m)) is not None},
        backoff_failures={m: b.failures for m in models if (b := router.backoff(m)) is not None},
    )


async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    metrics.bind(_bus(state), app[METRICS])
    handler = LogBufferHandler(
        app[PROXY_LOG], asyncio.get_running_loop(), lambda: app[STATE].config.log_time_format
    )
    logging.getLogger("llamaswap").addHandler(handler)
    app[_HANDLER].append(handler)


async def _on_shutdown(app: web.Application) -> None:
    open_streams = app[_OPEN]
    for closable in list(open_streams):
        closable.close()
    open_streams.clear()


async def _on_cleanup(app: web.Application) -> None:
    for handler in app[_HANDLER]:
        logging.getLogger("llamaswap").removeHandler(handler)
    app[_HANDLER].clear()
    with contextlib.suppress(Exception):
        metrics.unbind(_bus(app[STATE]))
    app[STATE].activity.close()


def add_routes(app: web.Application) -> None:
    """Register the observation routes, the request-metrics middleware and their lifetimes."""
    app[PROXY_LOG] = LogBuffer()
    app[METRICS] = metrics.Metrics(lambda: _snapshot(app))
    app[_OPEN] = set()
    app[_HANDLER] = []
    app.middlewares.insert(0, request_metrics)
    app.on_response_prepare.append(_on_prepare)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    app.router.add_get("/logs", logs)
    app.router.add_get("/logs/stream", logs_stream)
    app.router.add_get("/logs/stream/{logger:.+}", logs_stream)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/metrics", prometheus)
    activity_routes.add_routes(app)
