"""In-flight requests: who is being served right now, for the UI and for cancelling.

Every model request is registered from the moment its model is known until its last byte
is sent. `POST /api/inflight/<id>/cancel` cancels the request's handler task, which frees
its place in the queue or its lease and closes the upstream request (the client sees the
connection end).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import web

from llamaswap.errors import ModelNotFound
from llamaswap.observe.events import EventBus
from llamaswap.server.auth import redact_headers

CANCELLED_BY_OPERATOR = "request cancelled from /api/inflight"


class InflightRequest:
    """One request being served. What only a viewer needs (its client's address, its
    redacted headers) is worked out when first asked for, not on the request path."""

    __slots__ = ("_remote_ip", "_req_headers", "_request", "id", "model", "started", "task")

    def __init__(
        self, id: str, model: str, request: web.Request, task: asyncio.Task[Any] | None
    ) -> None:
        self.id = id
        self.model = model
        self._request = request  # read only while the request is in flight
        self.started = time.time()
        self.task = task
        self._remote_ip: str | None = None
        self._req_headers: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def req_path(self) -> str:
        return self._request.path

    @property
    def remote_ip(self) -> str:
        if self._remote_ip is None:
            self._remote_ip = client_ip(self._request)
        return self._remote_ip

    @property
    def req_headers(self) -> dict[str, str]:
        if self._req_headers is None:
            # str(): aiohttp's header names are `istr`, which JSON encoders refuse as keys.
            redacted = redact_headers(self._request.headers)
            self._req_headers = {str(k): v for k, v in redacted.items()}
        return self._req_headers

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": self.started,
            "model": self.model,
            "method": self.method,
            "req_path": self.req_path,
            "remote_ip": self.remote_ip,
            "req_headers": self.req_headers,
            "elapsed_ms": int((time.time() - self.started) * 1000),
        }


def client_ip(request: web.Request) -> str:
    """First X-Forwarded-For entry, then X-Real-IP, then the peer address."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded.strip():
        return forwarded.split(",")[0].strip()
    return request.headers.get("X-Real-IP", "") or request.remote or ""


class InflightTracker:
    """The registry; changes are published on the bus as `inflight` upsert/remove events."""

    def __init__(self) -> None:
        self._requests: dict[str, InflightRequest] = {}
        self._ids = itertools.count(1)

    def snapshot(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self._requests.values()]

    def track(self, request: web.Request, model: str, bus: EventBus) -> Tracking:
        """Registers the request for the `with` block it is used in."""
        entry = InflightRequest(str(next(self._ids)), model, request, asyncio.current_task())
        return Tracking(self._requests, entry, bus)

    def cancel(self, request_id: str) -> None:
        entry = self._requests.get(request_id)
        if entry is None or entry.task is None:
            raise ModelNotFound("inflight request not found")
        entry.task.cancel(CANCELLED_BY_OPERATOR)  # the reason its activity row shows


class Tracking:
    """One request's registration, as a context manager (a class: cheaper than a generator's
    on a path taken once per request)."""

    __slots__ = ("_bus", "_entry", "_requests")

    def __init__(
        self, requests: dict[str, InflightRequest], entry: InflightRequest, bus: EventBus
    ) -> None:
        self._requests = requests
        self._entry = entry
        self._bus = bus

    def __enter__(self) -> InflightRequest:
        entry = self._entry
        self._requests[entry.id] = entry
        # Building the row costs more than the rest of the bookkeeping; with no `inflight`
        # listener (no UI open) it is skipped. A listener that subscribes later starts from
        # `snapshot()`, so it misses nothing.
        if self._bus.wanted("inflight"):
            self._bus.publish("inflight", {"operation": "upsert", "request": entry.as_json()})
        return entry

    def __exit__(self, *exc_info: object) -> None:
        entry = self._entry
        del self._requests[entry.id]
        if self._bus.wanted("inflight"):
            self._bus.publish("inflight", {"operation": "remove", "id": entry.id})
