"""Finding and parsing one request head (pure: bytes in, values out).

Only what the fast path can serve is described; anything unusual (a malformed head, HTTP/1.0,
`Transfer-Encoding`, `Expect`, an upgrade, a percent-encoded path, a repeated
`Content-Length`) yields None, and the connection goes to aiohttp, whose parser and limits
answer it as they always do.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["MAX_HEAD_BYTES", "RequestHead", "head_end", "parse_head"]

# A head larger than this is left to aiohttp (whose limits answer 414/431 as configured).
MAX_HEAD_BYTES = 32 * 1024
NOT_YET = -1  # the head is not complete yet
NOT_OURS = -2  # the bytes cannot start a head we serve (bare LF line ends, too long)

_REFUSED_HEADERS = frozenset({"transfer-encoding", "expect", "upgrade"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    raw_path: str  # the target as sent, query included
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    content_length: int
    keep_alive: bool


def head_end(buffer: bytes | bytearray) -> int:
    """The offset just past the head's blank line, NOT_YET, or NOT_OURS."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end >= 0:
        bare = buffer.find(b"\n\n", 0, end)
        return NOT_OURS if bare >= 0 else end + 4
    if len(buffer) > MAX_HEAD_BYTES or buffer.find(b"\n\n") >= 0:
        return NOT_OURS
    return NOT_YET


class _Collector:
    __slots__ = ("complete", "headers", "length", "refused", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.length: int | None = None
        self.refused = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Decoded as aiohttp's parser does, so the upstream sees the same bytes either way.
        key = name.decode("utf-8", "surrogateescape")
        lower = key.lower()
        if lower == "content-length":
            if self.length is not None or not value.isdigit():
                self.refused = True
            else:
                self.length = int(value)
        elif lower in _REFUSED_HEADERS:
            self.refused = True
        self.headers.add(key, value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(head: bytes) -> RequestHead | None:
    """The head (up to and including its blank line), or None when the fast path leaves it
    to aiohttp."""
    found = _Collector()
    parser = httptools.HttpRequestParser(found)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # malformed, or an upgrade/CONNECT: aiohttp answers it
    if not found.complete or found.refused or parser.get_http_version() != "1.1":
        return None
    target = found.url.decode("ascii", "replace")
    path, _, query = target.partition("?")
    if "%" in path or "//" in path or "/." in path or not path.startswith("/"):
        return None  # aiohttp decodes and matches these by its own rules
    return RequestHead(
        method=parser.get_method().decode("ascii", "replace"),
        raw_path=target,
        path=path,
        query_string=query,
        headers=CIMultiDictProxy(found.headers),
        content_length=found.length or 0,
        keep_alive=parser.should_keep_alive(),
    )
