"""Response heads as aiohttp writes them for the same answers (status line, the upstream's
end-to-end headers, `Date`, `Server`, the framing), and whole error responses."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from llamaswap.server.proxy.forward import HOP_BY_HOP

__all__ = ["error_bytes", "response_head"]

_date = ["", 0]  # (formatted, second): `Date` changes once a second


def _http_date() -> str:
    now = int(time.time())
    if _date[1] != now:
        _date[0] = formatdate(now, usegmt=True)
        _date[1] = now
    return str(_date[0])


def _reason(status: int, reason: str | None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _bodyless(status: int) -> bool:
    return status < 200 or status in (204, 304)


def response_head(
    status: int, reason: str | None, upstream: Mapping[str, str], keep_alive: bool
) -> tuple[bytes, bool]:
    """The client's head for an upstream answer, and whether its body is sent chunked
    (the upstream gave no `Content-Length`: each piece is framed as it arrives).
    Without `keep_alive` the head says `Connection: close` (the client asked for it)."""
    lines = [f"HTTP/1.1 {status} {_reason(status, reason)}"]
    has_length = has_date = has_server = False
    for name, value in upstream.items():
        lower = name.lower()
        if lower == "content-length":
            has_length = True
        elif lower in HOP_BY_HOP:
            continue
        elif lower == "date":
            has_date = True
        elif lower == "server":
            has_server = True
        lines.append(f"{name}: {value}")
    if "text/event-stream" in upstream.get("Content-Type", ""):
        lines.append("X-Accel-Buffering: no")
    chunked = not has_length and not _bodyless(status)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if not has_date:
        lines.append(f"Date: {_http_date()}")
    if not has_server:
        lines.append(f"Server: {SERVER_SOFTWARE}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"), chunked


def error_bytes(response: web.Response, keep_alive: bool) -> bytes:
    """A whole `web.Response` (our error answers) on the wire."""
    body = response.body if isinstance(response.body, bytes) else b""
    lines = [f"HTTP/1.1 {response.status} {_reason(response.status, response.reason)}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    if "Content-Length" not in response.headers:
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Date: {_http_date()}")
    lines.append(f"Server: {SERVER_SOFTWARE}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
