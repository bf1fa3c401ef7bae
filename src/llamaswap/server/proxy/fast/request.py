"""The request as the shared bookkeeping sees it (in-flight registry, activity recorder,
access log), without an aiohttp request behind it.

Those modules read a handful of `web.Request` attributes and keep per-request values in
its mapping (`request_metadata`); this object has exactly those, so the fast path calls
them through their existing interfaces (`as_web_request`).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import HttpVersion11, web
from multidict import CIMultiDictProxy

from llamaswap.server.proxy.fast.head import RequestHead

__all__ = ["FastRequest"]


class FastRequest:
    __slots__ = (
        "_values",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "remote",
        "transport",
    )

    version = HttpVersion11

    def __init__(self, head: RequestHead, remote: str | None, transport: asyncio.Transport):
        self.method = head.method
        self.path = head.path
        self.raw_path = head.raw_path
        self.query_string = head.query_string
        self.headers: CIMultiDictProxy[str] = head.headers
        self.remote = remote
        self.transport: asyncio.Transport | None = transport
        self.keep_alive = head.keep_alive
        self._values: dict[object, Any] = {}

    @property
    def host(self) -> str | None:
        return self.headers.get("Host")

    def get(self, key: object, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __getitem__(self, key: object) -> Any:
        return self._values[key]

    def __setitem__(self, key: object, value: Any) -> None:
        self._values[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def as_web_request(self) -> web.Request:
        """This object where an interface is typed for aiohttp's request (duck-typed)."""
        return cast(web.Request, self)
