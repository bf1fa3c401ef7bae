"""Error responses in llama-swap's [H] envelope (spec §5.11, §3.7).

The only place a `RequestError` becomes an HTTP response. The body format follows the
client's `Accept` header: `text/plain` → `llama-swap: <msg>`; `text/html` → a tiny page
with the escaped message; anything else → the OpenAI-style JSON envelope

    {"src":"llama-swap","error":{"message":…,"type":…,"param":null,"code":…}}

`src` stays `"llama-swap"` (not our package name) so clients that check it keep working.
Bodies carry only the message: never a traceback.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from llamaswap.errors import RequestError, TooManyRequests

__all__ = [
    "error_body",
    "error_response",
    "error_type_and_code",
    "response_for_error",
    "too_many_requests_response",
]

SRC = "llama-swap"

_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def error_type_and_code(status: int) -> tuple[str, str]:
    """The OpenAI error `type` and default `code` for an HTTP status (§5.11 table)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return "invalid_request_error", "invalid_request"
    return "server_error", "internal_error"


def error_body(status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    """The JSON envelope for an error; `code` overrides the status's default code."""
    err_type, default_code = error_type_and_code(status)
    return {
        "src": SRC,
        "error": {
            "message": message,
            "type": err_type,
            "param": None,
            "code": code or default_code,
        },
    }


def _json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _html_page(status: int, message: str) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    text = html.escape(message)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{status} {reason}</title></head>"
        f"<body><h1>{status} {reason}</h1><p>{text}</p></body></html>\n"
    )


def error_response(
    request_accept: str,
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error response in the format `request_accept` (the Accept header) asks for."""
    accept = request_accept.lower()
    if "text/plain" in accept:
        return web.Response(
            status=status, text=f"{SRC}: {message}", content_type="text/plain", headers=headers
        )
    if "text/html" in accept:
        return web.Response(
            status=status,
            text=_html_page(status, message),
            content_type="text/html",
            headers=headers,
        )
    return _json_response(status, error_body(status, message, code=code), headers)


def too_many_requests_response(
    message: str = "Too many requests",
    code: str = "concurrency_limit",
    retry_after: float | None = None,
) -> web.Response:
    """The §3.7 answer: always JSON with `Retry-After` (1 s unless the scheduler knows better,
    e.g. a full queue says how long its model takes to load)."""
    seconds = max(1, math.ceil(retry_after)) if retry_after is not None else 1
    body = error_body(429, message, code=code)
    return _json_response(429, body, {"Retry-After": str(seconds)})


def response_for_error(accept: str, exc: RequestError) -> web.Response:
    """Translate a `RequestError` into its response (429s always as §3.7 JSON)."""
    if isinstance(exc, TooManyRequests):
        return too_many_requests_response(exc.message, exc.code or "", exc.retry_after)
    if exc.status == 429 and exc.code == "concurrency_limit":
        return too_many_requests_response()
    return error_response(accept, exc.status, exc.message, code=exc.code)
