"""Streaming reverse proxy to an upstream server.

Bodies are passed through chunk by chunk as they arrive (never buffered, never re-encoded:
the client session does not decompress). Server-sent events get `X-Accel-Buffering: no`
so that a fronting nginx does not buffer them either. When the client leaves, aiohttp
cancels the handler, which closes the upstream response and so cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from llamaswap.server.proxy.upstream_client import UpstreamClient
from llamaswap.server.responses import error_body, error_response

log = logging.getLogger("llamaswap.forward")

# RFC 9110 §7.6.1 connection-specific headers, plus the ones the transport recomputes, plus
# `Expect`: the body was read from the client already (aiohttp answered its 100 Continue), so
# an upstream must not be asked to say 100 Continue again.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
    }
)


# Set on a request served for another API (the Ollama routes): builds the client's response
# from the upstream's answer (a response that translates the body as it is written) instead
# of copying the upstream's status and headers. Taps still see the upstream's own bytes.
ResponseBuilder = Callable[["Answer"], web.StreamResponse]
RESPONSE_BUILDER: web.RequestKey[ResponseBuilder] = web.RequestKey("llamaswap_response_builder")


class ResponseTap(Protocol):
    """Sees a forwarded exchange without holding it up (the activity recorder is one)."""

    def request_headers(self, headers: CIMultiDict[str]) -> None:
        """May adjust the headers sent upstream (called once, before sending)."""

    def response_started(self, status: int, headers: Mapping[str, str]) -> None:
        """The upstream's (or our 502's) status and headers."""

    def chunk(self, data: bytes) -> None:
        """A body chunk, called after it was written to the client; must not block."""

    def client_left(self) -> None:
        """The client hung up before the whole answer was written to it."""


# Headers aiohttp would add on its own; a proxy forwards only what the client sent.
_NO_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)


class ProxyRequest(aiohttp.ClientRequest):
    """A client request that adds none of aiohttp's default headers (`Accept`,
    `Accept-Encoding`, `User-Agent`, a default `Content-Type`).

    Same effect as the session's `skip_auto_headers`, which rebuilds and copies the header
    set on every request (8% of the proxy's CPU under load, measured with py-spy)."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


def client_gone(request: web.Request) -> bool:
    """True when the client's connection is closed or closing (it hung up)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def new_client_session() -> aiohttp.ClientSession:
    """One pooled client for all upstreams: no overall timeout (streams may run for hours)."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        request_class=ProxyRequest,
    )


def upstream_headers(headers: Mapping[str, str], remote: str | None) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    if remote:
        prior = headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    return out


def join_url(base: str, path: str, query_string: str) -> str:
    url = base.rstrip("/") + (path if path.startswith("/") else "/" + path)
    return f"{url}?{query_string}" if query_string else url


async def forward(
    request: web.Request,
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    path: str,
    body: bytes | None,
    connect_timeout: float | None = None,
    header_timeout: float | None = None,
    into: web.StreamResponse | None = None,
    extra_headers: Mapping[str, str] | None = None,
    error_prefix: str = "upstream request failed",
    tap: ResponseTap | None = None,
    keep_host: bool = False,
    client: UpstreamClient | None = None,
) -> web.StreamResponse:
    """Send the request to `base_url + path` and stream the answer back to the client.

    With `into` (an already prepared response, e.g. a loading-state stream) only the upstream
    body is appended to it: its status and headers were sent already. A `tap` sees the
    exchange; each chunk reaches it only after the client got it. `keep_host` sends the
    client's Host (local upstreams, spec §3.4: e.g. ComfyUI checks Origin against Host);
    otherwise the upstream's own host is sent (peers). `client` is the lean upstream client
    used for plain-HTTP requests whose body is at hand (see `upstream_client`).
    `header_timeout` (`timeouts.responseHeader`; None or 0: none) bounds the wait for the
    answer's headers: past it the client gets 504 and the upstream request is dropped.
    """
    url = join_url(base_url, path, request.query_string)
    headers = upstream_headers(request.headers, request.remote)
    if keep_host and request.host:
        headers["Host"] = request.host
    if extra_headers:
        headers.update(extra_headers)
    if tap is not None:
        tap.request_headers(headers)
    try:
        upstream = await _send(
            request, session, client, url, headers, body, connect_timeout, header_timeout
        )
    except (ResponseHeaderTimeout, aiohttp.ClientError, OSError) as exc:
        log.warning("upstream request to %s failed: %s", url, exc)
        status = 504 if isinstance(exc, ResponseHeaderTimeout) else 502
        message = f"{error_prefix}: {exc}"
        if into is not None:
            payload = orjson.dumps(error_body(status, message))
            if tap is not None:
                tap.response_started(status, {"Content-Type": "application/json"})
                tap.chunk(payload)
            with contextlib.suppress(ConnectionError):  # the client may be gone too
                await into.write(payload)
                await into.write_eof()
            return into
        return error_response(request.headers.get("Accept", ""), status, message)
    if tap is not None:
        tap.response_started(upstream.status, upstream.headers)
    build = request.get(RESPONSE_BUILDER, _response_for)
    response = into if into is not None else build(upstream)
    try:
        if into is None:
            await response.prepare(request)
        async for chunk in upstream.iter_chunks():
            await response.write(chunk)
            if tap is not None:
                tap.chunk(chunk)
        upstream.release()
        await response.write_eof()
    except (aiohttp.ClientError, OSError) as exc:
        # Either side broke off (also at the very end: a client that had all it wanted
        # may close before the last chunk marker). The client, if still there, sees a
        # truncated body; closing the upstream connection cancels its work.
        log.info("stream to/from %s ended early: %s", url, exc)
        upstream.close()
        if tap is not None and client_gone(request):
            tap.client_left()
    except BaseException:
        upstream.close()  # cancelled (client left): drop the upstream request too
        raise
    return response


class Answer(Protocol):
    """An upstream's answer, from either client: status and headers, then the body."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None:
        """The body was read to its end: the connection may serve another request."""

    def close(self) -> None:
        """Abandon the answer: the connection is dropped (the upstream sees the client go)."""


class _AiohttpAnswer:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason: str | None = response.reason
        self.headers: Mapping[str, str] = response.headers

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


async def _send(
    request: web.Request,
    session: aiohttp.ClientSession,
    client: UpstreamClient | None,
    url: str,
    headers: CIMultiDict[str],
    body: bytes | None,
    connect_timeout: float | None,
    header_timeout: float | None,
) -> Answer:
    """The lean client for plain HTTP with the whole body at hand; aiohttp for the rest
    (HEAD, a body still arriving, HTTPS peers)."""
    deadline = asyncio.timeout(header_timeout or None)
    try:
        async with deadline:
            if client is not None and body is not None and request.method != "HEAD":
                target = URL(url, encoded=True)
                if target.scheme == "http" and target.host and target.port:
                    return await client.request(
                        request.method, target, headers.items(), body, connect_timeout
                    )
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout or None)
            response = await session.request(
                request.method,
                url,
                headers=headers,
                data=body if body is not None else request.content,
                allow_redirects=False,
                timeout=timeout,
            )
            return _AiohttpAnswer(response)
    except TimeoutError:
        # Only our deadline is the header timeout; a connect timeout stays a 502.
        if deadline.expired():
            raise ResponseHeaderTimeout(header_timeout) from None
        raise


class ResponseHeaderTimeout(Exception):
    """The upstream sent no response headers within `timeouts.responseHeader`."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__(f"no response headers within {seconds:g}s (timeouts.responseHeader)")


def _response_for(upstream: Answer) -> web.StreamResponse:
    """The client's response: the upstream's status and end-to-end headers."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP and lower != "content-length":
            continue
        response.headers.add(name, value)
    if "text/event-stream" in upstream.headers.get("Content-Type", ""):
        response.headers["X-Accel-Buffering"] = "no"
    return response
