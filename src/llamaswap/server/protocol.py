"""The HTTP/1.1 edge: request parsing limits and the answer to a request that cannot be parsed.

aiohttp's parser (llhttp) already refuses what could smuggle a request past a proxy: both
`Content-Length` and `Transfer-Encoding`, duplicate `Content-Length`, an unknown or repeated
transfer coding, obs-fold continuation lines, bare CR/LF and NUL in headers. Each gets a 400
and the connection is closed before anything is forwarded. aiohttp answers all of them, and
oversize heads too, with a text 400; here they get the usual JSON error envelope and the
status that says what was wrong:

* a header field longer than `MAX_FIELD_SIZE`, or more than `MAX_HEADERS` fields → 431;
* a request line longer than `MAX_LINE_SIZE` → 414;
* anything else malformed → 400.

The limits differ from each other on purpose: aiohttp's `LineTooLong` carries only the
limit it hit, which tells the request line from a header field.

Slow clients: a connection must deliver its first request head within `HEAD_TIMEOUT_S`,
later heads within `KEEPALIVE_TIMEOUT_S` of the previous answer, and at most `MAX_CONNECTIONS` are
open at once; past that a new connection is closed at once, so a flood of idle sockets
cannot exhaust file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from llamaswap.server.responses import error_response

__all__ = [
    "HEAD_TIMEOUT_S",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_LINE_SIZE",
    "Runner",
    "parse_error_status",
]

MAX_LINE_SIZE = 16 * 1024  # request line (method, target, version)
MAX_FIELD_SIZE = 32 * 1024  # one header field (name and value); big cookies, JWTs
MAX_HEADERS = 256
HEAD_TIMEOUT_S = 10.0  # from connect to the end of the first request head
KEEPALIVE_TIMEOUT_S = 75.0  # idle time between requests on one connection
MAX_CONNECTIONS = 2048  # open client connections, streams and event followers included

_TOO_MANY_HEADERS = "Too many headers received"

log = logging.getLogger(__name__)


def parse_error_status(exc: BaseException | None) -> tuple[int, str]:
    """The status and message for a request the parser refused."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_LINE_SIZE:
            return 414, f"request line longer than {MAX_LINE_SIZE} bytes"
        return 431, f"request header field longer than {MAX_FIELD_SIZE} bytes"
    if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
        return 431, f"more than {MAX_HEADERS} request header fields"
    if isinstance(exc, BadHttpMessage):
        first = exc.message.splitlines()[0] if exc.message else "malformed request"
        return 400, f"malformed HTTP request: {first.rstrip(':')}"
    return 400, "malformed HTTP request"


class _Handler(RequestHandler):
    """aiohttp's connection handler, answering unparsable requests and bounding slow or
    surplus connections as described above."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > MAX_CONNECTIONS:
            log.warning("more than %d open connections: closing a new one", MAX_CONNECTIONS)
            self.force_close()
            return
        self._head_deadline = self._loop.call_later(HEAD_TIMEOUT_S, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if self._request_count == 0:  # not one whole request head yet: a slow client
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:  # a handler crashed (500): aiohttp's own answer
            return super().handle_error(request, status, exc, message)
        # Logs as aiohttp does (serve.QuietBadRequests keeps one DEBUG line); its text
        # answer is replaced by ours.
        super().handle_error(request, status, exc, message)
        code, text = parse_error_status(exc)
        answer = error_response(request.headers.get("Accept", ""), code, text)
        answer.force_close()  # the stream may be out of step: never read another request
        return answer


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """`web.AppRunner` with the parsing limits above and JSON answers to parse errors."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE_SIZE)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        # An idle keep-alive connection, or one trickling a later request head, is closed
        # after this (aiohttp's default is an hour).
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same server, but its connections use `_Handler` (aiohttp has no hook for this).
        server.__class__ = _Server
        return server
