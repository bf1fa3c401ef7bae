"""The ingress: Serve's HTTP entry, speaking llamaswap's API and passing each request on.

The request goes whole (method, path, headers, body) to the node replica the request router
picks for its model, and the answer streams back chunk by chunk. `/v1/models` and
`/running` ask every node and merge; unloading is done on every node; `/health` answers
here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from llamaswap.config.load import load_config_text

# Serve's logger: its lines land in the replica's log file under Ray's session directory.
log = logging.getLogger("ray.serve")

FANOUT_TIMEOUT_S = 3.0
UPSTREAM_PREFIX = "/upstream/"
# Operator actions that mean "on every machine".
EVERY_NODE = frozenset({("GET", "/unload"), ("POST", "/api/models/unload")})
UNLOAD_ONE = "/api/models/unload/"
# What a `stream=True` handle's call returns.
Stream = DeploymentResponseGenerator[Any]


def error_response(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status)


def requested_model(path: str, body: bytes, content_type: str) -> str | None:
    """The model a request names: `/upstream/<model>/...`, else the JSON body's `model`."""
    if path.startswith(UPSTREAM_PREFIX):
        return path[len(UPSTREAM_PREFIX) :].split("/", 1)[0] or None
    if not body or "json" not in content_type:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the node answers the bad body with its own error
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) and model else None


class Ingress:
    def __init__(self, nodes: DeploymentHandle[Any], config_text: str, source: str) -> None:
        self._config = load_config_text(config_text, source)
        assert self._config.cluster is not None
        self._node_names = sorted(self._config.cluster.nodes)
        self._nodes = nodes.options(stream=True)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        if request.method == "GET" and request.url.path == "/health":
            return PlainTextResponse("OK")
        if request.method == "GET" and request.url.path in ("/v1/models", "/models"):
            return await self._models(request, path)
        if request.method == "GET" and request.url.path == "/running":
            return await self._running(request, path)
        if (request.method, request.url.path) in EVERY_NODE or request.url.path.startswith(
            UNLOAD_ONE
        ):
            return await self._on_every_node(request, path)
        body = await request.body()
        name = requested_model(request.url.path, body, request.headers.get("content-type", ""))
        # Aliases and unknown names are routed by the model ID they stand for; an unknown
        # name goes anywhere, and that node answers with llamaswap's own error.
        model = self._config.resolve_model(name) if name is not None else None
        stream = self._nodes.forward.remote(
            request.method, path, list(request.headers.items()), body, model=model
        )
        return await self._relay(cast(Stream, stream))

    async def _relay(self, stream: Stream) -> Response:
        try:
            head: dict[str, Any] = await stream.__anext__()
        except Exception as exc:  # the node died or was unreachable before answering
            log.warning("request failed on its node: %s", exc)
            return error_response(503, f"node unavailable: {exc}", "service_unavailable")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield chunk
            except Exception as exc:  # a node lost mid-answer: the client sees a cut stream
                log.warning("response cut: its node failed: %s", exc)

        headers = dict(head["headers"])
        headers["X-Llamaswap-Node"] = head["node"]
        return StreamingResponse(body(), status_code=head["status"], headers=headers)

    async def _ask_every_node(
        self, request: Request, method: str, path: str, body: bytes = b""
    ) -> list[tuple[str, int, bytes]]:
        """Each answering node's name, status and body for the same request."""
        headers = list(request.headers.items())

        async def ask(node: str) -> tuple[str, int, bytes]:
            stream = cast(
                Stream, self._nodes.forward.remote(method, path, headers, body, node=node)
            )
            head = await stream.__anext__()
            return node, int(head["status"]), b"".join([chunk async for chunk in stream])

        async def bounded(node: str) -> tuple[str, int, bytes] | None:
            try:
                return await asyncio.wait_for(ask(node), FANOUT_TIMEOUT_S)
            except Exception as exc:  # a node that is down is left out
                log.warning("node %s did not answer %s %s: %s", node, method, path, exc)
                return None

        # One node after the other: calls made while serving one request share its request
        # ID, and Serve's router (Ray 2.60) loses all but one of such calls when they wait
        # to be routed at the same time.
        answers = [await bounded(n) for n in self._node_names]
        return [a for a in answers if a is not None]

    async def _json_from_every_node(self, request: Request, path: str) -> list[tuple[str, Any]]:
        found = []
        for node, status, body in await self._ask_every_node(request, "GET", path):
            if status == 200:
                found.append((node, orjson.loads(body)))
            else:
                log.warning("node %s answered GET %s with %s", node, path, status)
        return found

    async def _on_every_node(self, request: Request, path: str) -> Response:
        """An operator action (unload) done on every node: the first success is the answer."""
        answers = await self._ask_every_node(request, request.method, path, await request.body())
        if not answers:
            return error_response(503, "no node answered", "service_unavailable")
        node, status, body = min(answers, key=lambda a: (a[1] != 200, a[0]))
        return Response(body, status, headers={"X-Llamaswap-Node": node})

    async def _models(self, request: Request, path: str) -> Response:
        seen: dict[str, dict[str, Any]] = {}
        for _, answer in await self._json_from_every_node(request, path):
            for entry in answer.get("data", []):
                seen.setdefault(str(entry.get("id")), entry)
        return JSONResponse({"object": "list", "data": [seen[k] for k in sorted(seen)]})

    async def _running(self, request: Request, path: str) -> Response:
        entries = [
            {**entry, "node": node}
            for node, answer in await self._json_from_every_node(request, path)
            for entry in answer.get("running", [])
        ]
        return JSONResponse({"running": entries})
