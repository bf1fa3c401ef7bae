"""The ingress: Serve's HTTP entry, speaking llamaswap's API and passing each request on.

The request goes whole (method, path, headers, body) to the node replica the request router
picks for its model, and the answer streams back chunk by chunk. `/v1/models`, `/running`,
`/metrics` and `/api/events` ask every node and merge; unloading is done on every node;
`/health` and the cluster's own routes (`/cluster/nodes`, `/cluster/drain`,
`/cluster/undrain`) answer here.
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

from llamaswap.cluster.draining import named_node, why_refused
from llamaswap.cluster.merge_events import merged
from llamaswap.cluster.merge_metrics import merge_metrics
from llamaswap.cluster.nodes import allowed_models
from llamaswap.config.load import load_config_text
from llamaswap.server.auth import UNAUTHORIZED_MESSAGE, ApiKeyChecker

# Serve's logger: its lines land in the replica's log file under Ray's session directory.
log = logging.getLogger("ray.serve")

FANOUT_TIMEOUT_S = 3.0
UPSTREAM_PREFIX = "/upstream/"
# Operator actions that mean "on every machine".
EVERY_NODE = frozenset({("GET", "/unload"), ("POST", "/api/models/unload")})
UNLOAD_ONE = "/api/models/unload/"
# What a `stream=True` handle's call returns.
Stream = DeploymentResponseGenerator[Any]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


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
        self._allowed = {
            name: frozenset(allowed_models(self._config, node))
            for name, node in self._config.cluster.nodes.items()
        }
        self._keys = ApiKeyChecker(self._config.api_keys)
        self._draining: set[str] = set()
        self._nodes = nodes.options(stream=True)
        self._calls = nodes

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        if request.method == "GET" and request.url.path == "/health":
            return PlainTextResponse("OK")
        if request.method == "GET" and request.url.path in ("/v1/models", "/models"):
            return await self._models(request, path)
        if request.method == "GET" and request.url.path in ("/api/tags", "/api/ps"):
            return await self._ollama_models(request, path)
        if request.method == "GET" and request.url.path == "/running":
            return await self._running(request, path)
        if request.method == "GET" and request.url.path == "/metrics":
            return await self._metrics(request)
        if request.method == "GET" and request.url.path == "/api/events":
            return await self._events(request)
        if request.url.path.startswith("/cluster/"):
            return await self._cluster_route(request)
        if (request.method, request.url.path) in EVERY_NODE or request.url.path.startswith(
            UNLOAD_ONE
        ):
            return await self._on_every_node(request, path)
        body = await request.body()
        name = requested_model(request.url.path, body, request.headers.get("content-type", ""))
        # Aliases and unknown names are routed by the model ID they stand for; an unknown
        # name goes anywhere, and that node answers with llamaswap's own error.
        model = self._config.resolve_model(name) if name is not None else None
        refused = why_refused(model, self._allowed, self._draining)
        if refused is not None:
            return error_response(503, refused, "service_unavailable")
        stream = self._nodes.forward.remote(
            request.method,
            path,
            list(request.headers.items()),
            body,
            model=model,
            avoid=tuple(sorted(self._draining)),
        )
        return await self._relay(cast(Stream, stream))

    async def _relay(self, stream: Stream) -> Response:
        try:
            head: dict[str, Any] = await stream.__anext__()
        except Exception as exc:  # the node died or was unreachable before answering
            log.warning("request failed on its node: %s", exc)
            return error_response(
                503, f"the node serving this request failed: {exc}", "service_unavailable"
            )
        node = str(head["node"])
        headers = dict(head["headers"])
        event_stream = "text/event-stream" in next(
            (v for k, v in headers.items() if k.lower() == "content-type"), ""
        )

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield chunk
            except Exception as exc:  # a node lost mid-answer: the status is already sent
                log.warning("response cut: node %s failed: %s", node, exc)
                if event_stream:
                    # An SSE client (the OpenAI SDK) raises on an `error` event, where a
                    # bare cut could pass for a short answer.
                    message = f"node {node} failed mid-answer: the response is cut"
                    error = {"message": message, "type": "service_unavailable", "code": 503}
                    yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"

        headers["X-Llamaswap-Node"] = node
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
        entries = await self._each_once(request, path, "data", "id")
        return JSONResponse({"object": "list", "data": entries})

    async def _ollama_models(self, request: Request, path: str) -> Response:
        """Ollama's model lists (`/api/tags`, and `/api/ps` for what is loaded)."""
        return JSONResponse({"models": await self._each_once(request, path, "models", "name")})

    async def _each_once(
        self, request: Request, path: str, field: str, key: str
    ) -> list[dict[str, Any]]:
        """Every answering node's `field` list merged, each entry once by its `key`, sorted."""
        seen: dict[str, dict[str, Any]] = {}
        for _, answer in await self._json_from_every_node(request, path):
            for entry in answer.get(field, []):
                seen.setdefault(str(entry.get(key)), entry)
        return [seen[k] for k in sorted(seen)]

    async def _running(self, request: Request, path: str) -> Response:
        answers = await self._json_from_every_node(request, path)
        entries: list[dict[str, Any]] = []
        for node, answer in answers:
            extra = {"node": node, **({"nodeDraining": True} if node in self._draining else {})}
            entries.extend({**entry, **extra} for entry in answer.get("running", []))
        answered = {node for node, _ in answers}
        nodes = [
            {"node": n, "answered": n in answered, "draining": n in self._draining}
            for n in self._node_names
        ]
        return JSONResponse({"running": entries, "nodes": nodes})

    async def _metrics(self, request: Request) -> Response:
        texts = [
            (node, body.decode("utf-8", "replace"))
            for node, status, body in await self._ask_every_node(request, "GET", "/metrics")
            if status == 200
        ]
        if not texts:
            return error_response(503, "no node answered", "service_unavailable")
        return Response(merge_metrics(texts), 200, media_type=METRICS_CONTENT_TYPE)

    async def _events(self, request: Request) -> Response:
        """Every node's event stream merged (`?node=NAME`: that node's only)."""
        wanted = request.query_params.get("node")
        if wanted is not None and wanted not in self._node_names:
            known = ", ".join(self._node_names)
            return error_response(400, f"no node {wanted!r}; its nodes: {known}", "invalid_request")
        headers = list(request.headers.items())
        opened: list[tuple[str, Stream]] = []
        # One node after the other, each routed and answering before the next is asked
        # (see _ask_every_node); once open, the streams are read at the same time.
        for node in [wanted] if wanted is not None else self._node_names:
            stream = cast(
                Stream, self._nodes.forward.remote("GET", "/api/events", headers, b"", node=node)
            )
            try:
                head = await asyncio.wait_for(stream.__anext__(), FANOUT_TIMEOUT_S)
            except Exception as exc:  # a node that is down is left out
                log.warning("node %s did not open its event stream: %s", node, exc)
                stream.cancel()
                continue
            if head["status"] != 200:  # e.g. a refused API key: every node says the same
                for other in opened:
                    other[1].cancel()
                refusal = b"".join([chunk async for chunk in stream])
                return Response(refusal, int(head["status"]), headers=dict(head["headers"]))
            opened.append((node, stream))
        if not opened:
            return error_response(503, "no node answered", "service_unavailable")
        streaming = {node for node, _ in opened}
        nodes = [
            {"node": n, "streaming": n in streaming, "draining": n in self._draining}
            for n in self._node_names
        ]
        first = orjson.dumps({"type": "clusterNodes", "data": orjson.dumps(nodes).decode()})

        async def body() -> AsyncIterator[bytes]:
            frames = merged([(node, _chunks(stream)) for node, stream in opened])
            try:
                yield b"event:message\ndata:" + first + b"\n\n"
                async for frame in frames:
                    yield frame
            finally:  # the client left or a node's stream ended: close the others' too
                for _, stream in opened:
                    stream.cancel()
                await frames.aclose()  # its readers stop now, not when it is collected

        return StreamingResponse(body(), headers=SSE_HEADERS)

    async def _cluster_route(self, request: Request) -> Response:
        """The cluster's own operator routes: `GET /cluster/nodes`, `POST /cluster/drain`
        and `POST /cluster/undrain` with `{"node": NAME}`."""
        if not self._keys.check(dict(request.headers)):
            return error_response(401, UNAUTHORIZED_MESSAGE, "authentication_error")
        route = (request.method, request.url.path)
        if route == ("GET", "/cluster/nodes"):
            return JSONResponse({"nodes": self._node_views()})
        if route not in (("POST", "/cluster/drain"), ("POST", "/cluster/undrain")):
            return error_response(404, f"no route {route[0]} {route[1]}", "not_found")
        node, why = named_node(await request.body(), self._node_names)
        if node is None:
            return error_response(400, why, "invalid_request")
        drain = route[1] == "/cluster/drain"
        # The ingress's own set decides routing at once; the node is told so that it unloads
        # its idle models and reports itself drained (the router reads that too).
        if drain:
            self._draining.add(node)
        else:
            self._draining.discard(node)
        told = True
        try:
            call = self._calls.set_draining.remote(drain, node=node)
            await asyncio.wait_for(call, FANOUT_TIMEOUT_S)
        except Exception as exc:  # down: it gets no requests, and a new replica has no models
            log.warning("node %s was not told (drain=%s): %s", node, drain, exc)
            told = False
        log.info("node %s %s", node, "drains" if drain else "serves again")
        return JSONResponse({"node": node, "draining": drain, "nodeAnswered": told})

    def _node_views(self) -> list[dict[str, Any]]:
        return [
            {"node": n, "draining": n in self._draining, "models": sorted(self._allowed[n])}
            for n in self._node_names
        ]


async def _chunks(stream: Stream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk
