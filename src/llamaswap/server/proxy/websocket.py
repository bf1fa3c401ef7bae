"""Websocket passthrough: one client websocket joined to one upstream websocket.

The upstream is connected first, so a refused or failed upstream handshake reaches the
client as an ordinary HTTP error (502) instead of an accepted socket that closes at once.
Then the client's handshake is accepted with the subprotocol the upstream chose, and two
pumps copy messages until either side closes:

1. text and binary messages are copied as they are (no size limit: the upstream decides);
2. pings are answered by aiohttp on each leg (a client's ping is not forwarded);
3. a close from one side closes the other with the same code and reason; a side that
   vanishes without a close frame (1006) closes the other with 1001 ("going away");
4. the handler ends when both legs are closed; cancelling it (client gone, in-flight cancel,
   server shutdown) closes both.

Open client sockets are registered on the app so that server shutdown closes them with
1001 instead of waiting out the shutdown drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from llamaswap.server.proxy.forward import join_url, upstream_headers
from llamaswap.server.responses import error_response

log = logging.getLogger("llamaswap.websocket")

OPEN_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("llamaswap_open_websockets")

# Set by each leg's own handshake, never copied from the other leg.
_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Close codes that describe a missing close frame and must never be sent in one (RFC 6455 §7.4.1).
_RESERVED_CODES = frozenset({1005, 1006, 1015})
_CLOSE_TIMEOUT = 5.0


def is_websocket_upgrade(request: web.Request) -> bool:
    """A GET asking to switch protocols to websocket."""
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").strip().lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def requested_protocols(request: web.Request) -> tuple[str, ...]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(p.strip() for p in header.split(",") if p.strip())


def add_shutdown_hook(app: web.Application) -> None:
    """Close every proxied websocket when the server shuts down (before the drain wait)."""
    app[OPEN_SOCKETS] = set()

    async def close_all(app: web.Application) -> None:
        sockets: set[web.WebSocketResponse] = app[OPEN_SOCKETS]
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                for ws in list(sockets)
            ),
            return_exceptions=True,
        )

    app.on_shutdown.append(close_all)


async def proxy_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    path: str,
    extra_headers: Mapping[str, str] | None = None,
    keep_host: bool = False,
    error_prefix: str = "upstream websocket failed",
) -> web.StreamResponse:
    """Join the client's websocket to `base_url + path` (query kept) until either closes.

    `keep_host` sends the client's `Host` (local upstreams, spec §3.4): web UIs such as
    ComfyUI refuse a websocket whose `Origin` does not match the `Host` they are given."""
    url = join_url(base_url, path, request.query_string)
    headers = upstream_headers(request.headers, request.remote)
    for name in _HANDSHAKE_HEADERS:
        headers.popall(name, None)
    if keep_host and request.host:
        headers["Host"] = request.host
    if extra_headers:
        headers.update(extra_headers)
    try:
        upstream = await session.ws_connect(
            url,
            protocols=requested_protocols(request),
            headers=headers,
            autoclose=False,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_TIMEOUT),
        )
    except aiohttp.WSServerHandshakeError as exc:
        log.warning("websocket handshake with %s refused: %s %s", url, exc.status, exc.message)
        message = f"{error_prefix}: upstream answered {exc.status} {exc.message}"
        return error_response(request.headers.get("Accept", ""), 502, message)
    except (aiohttp.ClientError, OSError) as exc:
        log.warning("websocket connect to %s failed: %s", url, exc)
        return error_response(request.headers.get("Accept", ""), 502, f"{error_prefix}: {exc}")
    try:
        protocols = (upstream.protocol,) if upstream.protocol else ()
        client = web.WebSocketResponse(protocols=protocols, autoclose=False, max_msg_size=0)
        await client.prepare(request)
        sockets = request.app.get(OPEN_SOCKETS, set())
        sockets.add(client)
        try:
            await _join(client, upstream)
        finally:
            sockets.discard(client)
        return client
    finally:
        if not upstream.closed:
            # Cancelled (client gone, in-flight cancel) or failed: do not leave it open.
            with contextlib.suppress(Exception):
                await asyncio.shield(upstream.close(code=WSCloseCode.GOING_AWAY))


async def _join(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    bridge = _Bridge()
    to_upstream = asyncio.create_task(bridge.pump(client, upstream), name="llamaswap-ws-up")
    to_client = asyncio.create_task(bridge.pump(upstream, client), name="llamaswap-ws-down")
    try:
        # One pump ends when its source closes, after closing its sink; closing the sink
        # ends the other pump.
        await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({to_upstream, to_client}, timeout=_CLOSE_TIMEOUT)
        if len(done) < 2:
            log.info("websocket peer did not finish its close handshake; dropping it")
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        for ws in (client, upstream):
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(ws.close(code=WSCloseCode.GOING_AWAY))


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
_SEND_ERRORS = (ConnectionError, RuntimeError, aiohttp.ClientError)


class _Bridge:
    """The two pumps of one connection; the first side to close decides the close code."""

    def __init__(self) -> None:
        self.closing = False

    async def pump(self, source: Socket, sink: Socket) -> None:
        """Copy messages from `source` to `sink` until `source` closes (docstring steps 1-3)."""
        while True:
            msg = await source.receive()
            if msg.type is WSMsgType.TEXT:
                with contextlib.suppress(*_SEND_ERRORS):  # the sink's own pump sees its close
                    await sink.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                with contextlib.suppress(*_SEND_ERRORS):
                    await sink.send_bytes(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                # The peer closed. autoclose is off, so the answer is sent here, after the
                # other side has been told: the code travels end to end.
                code, reason = _close_args(msg.data, msg.extra)
                if not self.closing:
                    self.closing = True
                    await _close(sink, code, reason)
                await _close(source, code, reason)
                return
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                # CLOSING: closed from here (the other pump, or shutdown); CLOSED: gone
                # without a close frame; ERROR: a protocol error (its code is kept).
                error_code = source.close_code if msg.type is WSMsgType.ERROR else None
                if not self.closing:
                    self.closing = True
                    await _close(sink, *_close_args(error_code, None))
                return


async def _close(ws: Socket, code: int, reason: bytes) -> None:
    if not ws.closed:
        with contextlib.suppress(*_SEND_ERRORS):
            await ws.close(code=code, message=reason)


def _close_args(code: object, extra: object) -> tuple[int, bytes]:
    if not isinstance(code, int) or code in _RESERVED_CODES:
        return WSCloseCode.GOING_AWAY, b""
    reason = extra.encode() if isinstance(extra, str) else b""
    return code, reason
