"""Ollama's API on llamaswap's own port, over the same models, scheduler and leases.

`/api/chat`, `/api/generate`, `/api/embed` and `/api/embeddings` are translated to an OpenAI
request (`ollama_translate`) and served by the very path `/v1/...` requests take
(`app.serve_body`: profiles, selectors, peers, filters, the lease, recording, metrics,
in-flight tracking) on a clone of the request with the OpenAI path. The clone carries a
`RESPONSE_BUILDER` so the forwarder writes the upstream's answer through a translating
response (`ollama_replies`); the activity recorder still sees the upstream's own bytes.
Auth is the app's middleware, as for every route.

Listing routes (`/api/tags`, `/api/ps`, `/api/show`) are answered from the config and the
processes' states; `/api/version` is the app's. Model management (`pull`, `push`, `create`,
`copy`, `delete`, blobs) answers 400: models come from the config file.

`keep_alive`: `0` unloads the model once the request is done (when no other request holds
it); a duration (`"5m"`, `300`) replaces the model's `ttl` for its current load, and a
negative one (`-1`, `"-1m"`) keeps it loaded until it is unloaded or evicted. A chat without
messages or a generate without a prompt only loads the model (or, with `keep_alive: 0`,
unloads it), as Ollama does. Errors are `{"error": "<message>"}` with the HTTP status.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from llamaswap.errors import ModelNotFound, RequestError
from llamaswap.server.api import profiles
from llamaswap.server.api.ollama_replies import (
    CompletionBody,
    CompletionStream,
    EmbedBody,
    ErrorBody,
    Reply,
    Shape,
    error_message,
    now_rfc3339,
)
from llamaswap.server.api.ollama_translate import (
    Upstream,
    chat_request,
    embed_request,
    generate_request,
    keep_alive_seconds,
    model_name,
    parse_object,
)
from llamaswap.server.api.peers import resolve_peer
from llamaswap.server.proxy.forward import RESPONSE_BUILDER, Answer
from llamaswap.server.proxy.recording import request_metadata
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState

__all__ = ["BodyRoute", "TranslatedResponse", "add_routes", "is_ollama_client"]

BodyRoute = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
_SERVE_BODY: web.AppKey[BodyRoute] = web.AppKey("llamaswap_serve_body")
MANAGED_BY_CONFIG = (
    "llamaswap serves the models of its config file; {op} is not supported "
    "(add or change models in the config instead)"
)
# What `/api/ps` reports as the expiry of a model that never expires (ttl 0).
_FOREVER = "9999-12-31T23:59:59Z"
# Client headers not passed to the translated request: its body, encoding and answer format
# are ours (the answer must reach the translator uncompressed).
_OWN_HEADERS = ("Content-Length", "Content-Type", "Accept", "Accept-Encoding", "Transfer-Encoding")


def ollama_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def is_ollama_client(headers: Mapping[str, str]) -> bool:
    """Ollama's own clients (the CLI, ollama-python, ollama-js) name themselves so."""
    return headers.get("User-Agent", "").lower().startswith("ollama")


class TranslatedResponse(web.StreamResponse):
    """The client's response to a translated request: every upstream chunk is fed to a
    `Reply`, whose output is written instead; the end of the body adds its last lines."""

    def __init__(self, status: int, reply: Reply) -> None:
        super().__init__(status=status, headers={"Content-Type": reply.content_type})
        self.reply = reply
        self._finished = False

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        for out in self.reply.feed(bytes(data)):
            await super().write(out)

    async def write_eof(self, data: bytes = b"") -> None:
        # Also called by aiohttp after a stream cut short: the reply then says so.
        if not self._finished:
            self._finished = True
            for out in self.reply.finish():
                await super().write(out)
        await super().write_eof(data)


def _clock_ns() -> int:
    return time.monotonic_ns()


def _known(state: AppState, name: str) -> bool:
    config = state.config
    return (
        config.resolve_model(name) is not None
        or name in config.selectors
        or name in profiles.active_pins(state)
        or resolve_peer(config, name) is not None
    )


def _route_name(state: AppState, name: str) -> str:
    """The configured name an Ollama name means: itself, or without Ollama's default
    `:latest` tag. 404 in Ollama's words when neither is known."""
    if _known(state, name):
        return name
    if name.endswith(":latest") and _known(state, name.removesuffix(":latest")):
        return name.removesuffix(":latest")
    raise ModelNotFound(f"model '{name}' not found")


def _local_id(state: AppState, name: str) -> str | None:
    """The local model a name is served by now (None for peers and selectors)."""
    try:
        target = profiles.pin_target(state, name) or name
    except ModelNotFound:
        return None
    return state.config.resolve_model(target)


async def _keep_alive(state: AppState, model_id: str, seconds: float) -> None:
    """After a request: `keep_alive: 0` stops the model unless another request holds it; a
    duration is its idle ttl for this load (negative: never stopped for idleness)."""
    if seconds == 0:
        if state.router.lease_count(model_id) == 0:
            await state.router.unload([model_id])
    else:
        state.router.keep_alive(model_id, 0.0 if seconds < 0 else seconds)


def _inner_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out = CIMultiDict(headers)
    for name in _OWN_HEADERS:
        out.popall(name, None)
    out["Content-Type"] = "application/json"
    out["Accept"] = "application/json"
    return out


async def _relay(
    request: web.Request,
    base: web.Request,
    upstream: Upstream,
    make_reply: Callable[[], Reply],
    keep_alive: tuple[str, float] | None,
) -> web.StreamResponse:
    """Serve `upstream` on a clone of the request at the OpenAI path; translate the answer."""
    inner = base.clone(rel_url=upstream.path)
    made: list[TranslatedResponse] = []

    def build(answer: Answer) -> web.StreamResponse:
        reply = make_reply() if answer.status < 400 else ErrorBody()
        made.append(TranslatedResponse(answer.status, reply))
        return made[0]

    inner[RESPONSE_BUILDER] = build
    request_metadata(inner)["api"] = f"ollama {request.path}"
    try:
        response = await request.app[_SERVE_BODY](inner, orjson.dumps(upstream.body))
    except RequestError as exc:
        return ollama_error(exc.status, exc.message)
    finally:
        if keep_alive is not None:
            await _keep_alive(request.app[STATE], *keep_alive)
    if made:
        return response
    # An answer of our own (upstream unreachable, peer error): keep its status, reword it.
    body = response.body if isinstance(response, web.Response) else b""
    raw = body if isinstance(body, bytes) else b""
    return ollama_error(response.status, error_message(raw) if raw else "upstream error")


async def _load_only(
    request: web.Request, shape: Shape, requested: str, name: str, keep_alive: float | None
) -> web.Response:
    """A chat without messages / generate without prompt: load the model (or unload it)."""
    state = request.app[STATE]
    model_id = _local_id(state, name)
    if model_id is None:
        raise ModelNotFound(f"model '{requested}' cannot be loaded here (not a local model)")
    if keep_alive == 0:
        await state.router.unload([model_id])
        reason = "unload"
    else:
        lease = await state.router.acquire(model_id)
        lease.release()
        if keep_alive is not None:
            await _keep_alive(state, model_id, keep_alive)
        reason = "load"
    obj: dict[str, Any] = {"model": requested, "created_at": now_rfc3339()}
    if shape == "chat":
        obj["message"] = {"role": "assistant", "content": ""}
    else:
        obj["response"] = ""
    obj.update({"done": True, "done_reason": reason})
    return web.json_response(obj)


async def _translated(
    request: web.Request,
    translate: Callable[[dict[str, Any], str], Upstream],
    make_reply: Callable[[Upstream, str, int], Reply],
    shape: Shape | None,
) -> web.StreamResponse:
    """Parse, translate and relay one inference request; errors in Ollama's shape."""
    started = _clock_ns()
    # Cloned before the body is read (aiohttp cannot clone a request after that).
    base = request.clone(headers=_inner_headers(request.headers))
    try:
        state = request.app[STATE]
        doc = parse_object(await request.read())
        requested = model_name(doc)
        name = _route_name(state, requested)
        keep_alive = keep_alive_seconds(doc.get("keep_alive"))
        if shape is not None and _only_loads(doc, shape):
            return await _load_only(request, shape, requested, name, keep_alive)
        upstream = translate(doc, name)
        model_id = _local_id(state, name) if keep_alive is not None else None
        after = None if model_id is None or keep_alive is None else (model_id, keep_alive)
        reply = lambda: make_reply(upstream, requested, started)  # noqa: E731
        return await _relay(request, base, upstream, reply, after)
    except RequestError as exc:
        return ollama_error(exc.status, exc.message)


def _only_loads(doc: dict[str, Any], shape: Shape) -> bool:
    if shape == "chat":
        return not doc.get("messages")
    return not doc.get("prompt") and not doc.get("images") and not doc.get("raw")


def _completion_reply(shape: Shape) -> Callable[[Upstream, str, int], Reply]:
    def make(upstream: Upstream, requested: str, started: int) -> Reply:
        # A raw generate is a text completion; both readers take its `text` as content.
        if upstream.stream:
            return CompletionStream(shape, requested, _clock_ns, started_ns=started)
        return CompletionBody(shape, requested, _clock_ns, started_ns=started)

    return make


async def chat(request: web.Request) -> web.StreamResponse:
    return await _translated(request, chat_request, _completion_reply("chat"), "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    return await _translated(request, generate_request, _completion_reply("generate"), "generate")


def _embedding_route(*, legacy: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`/api/embed`, or the legacy `/api/embeddings` (one `prompt`, one `embedding`)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _translated(
            request,
            lambda doc, name: embed_request(doc, name, legacy=legacy),
            lambda _up, requested, started: EmbedBody(
                requested, _clock_ns, legacy=legacy, started_ns=started
            ),
            None,
        )

    return handler


# ---- listings ---------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _details() -> dict[str, Any]:
    # Not known without reading the model file; Ollama's clients accept empty values.
    return {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(state: AppState, model_id: str) -> str:
    """Stands in for Ollama's file digest: changes when the model's command does."""
    cmd = state.config.models[model_id].cmd
    return hashlib.sha256(f"{model_id}\n{cmd}".encode()).hexdigest()


def _tag_entry(state: AppState, name: str, model_id: str | None) -> dict[str, Any]:
    modified = datetime.fromtimestamp(state.started, UTC)
    digest = _digest(state, model_id) if model_id else hashlib.sha256(name.encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": _rfc3339(modified),
        "size": 0,
        "digest": digest,
        "details": _details(),
    }


async def tags(request: web.Request) -> web.Response:
    """Local models (and their aliases when `includeAliasesInList`), then peer models."""
    state = request.app[STATE]
    config = state.config
    entries = []
    for model_id, model in sorted(config.models.items()):
        if model.unlisted:
            continue
        entries.append(_tag_entry(state, model_id, model_id))
        if config.include_aliases_in_list:
            entries.extend(_tag_entry(state, alias, model_id) for alias in model.aliases)
    for peer_id in sorted(config.peers):
        for peer_model in config.peers[peer_id].models:
            entries.append(_tag_entry(state, f"{peer_id}/{peer_model}", None))
    return web.json_response({"models": entries})


async def ps(request: web.Request) -> web.Response:
    """Local models starting or ready. `expires_at` is the latest the ttl (or the load's
    `keep_alive`) could stop it (now + ttl: the idle time so far is not counted)."""
    state = request.app[STATE]
    now = datetime.now(UTC)
    entries = []
    for model_id, model in sorted(state.config.models.items()):
        if state.router.state(model_id) not in (ProcessState.STARTING, ProcessState.READY):
            continue
        entry = _tag_entry(state, model_id, model_id)
        del entry["modified_at"]
        ttl = state.router.ttl(model_id)
        entry["expires_at"] = _rfc3339(now + timedelta(seconds=ttl)) if ttl > 0 else _FOREVER
        entry["size_vram"] = 0
        if model.capabilities.context:
            entry["context_length"] = model.capabilities.context
        entries.append(entry)
    return web.json_response({"models": entries})


def _capabilities(state: AppState, model_id: str) -> list[str]:
    caps = state.config.models[model_id].capabilities
    if caps.is_empty():
        return ["completion"]
    out = ["completion"] if not caps.out or "text" in caps.out else []
    if "image" in caps.inputs:
        out.append("vision")
    if caps.tools:
        out.append("tools")
    return out


async def show(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        requested = model_name(parse_object(await request.read()))
        name = _route_name(state, requested)
    except RequestError as exc:
        return ollama_error(exc.status, exc.message)
    model_id = _local_id(state, name)
    if model_id is None:
        return ollama_error(404, f"model '{requested}' is not a local model")
    model = state.config.models[model_id]
    info: dict[str, Any] = {"general.architecture": "llamaswap", "general.basename": model_id}
    if model.capabilities.context:
        info["llamaswap.context_length"] = model.capabilities.context
    return web.json_response(
        {
            "modelfile": f"# served by llamaswap from its config\nFROM {model_id}\n",
            "parameters": "",
            "template": "",
            "license": "",
            "details": _details(),
            "model_info": info,
            "capabilities": _capabilities(state, model_id),
            "modified_at": _rfc3339(datetime.fromtimestamp(state.started, UTC)),
        }
    )


def _not_managed(op: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        # 400, not 501: a request this server will never serve, and 5xx means a fault.
        return ollama_error(400, MANAGED_BY_CONFIG.format(op=op))

    return handler


def add_routes(app: web.Application, serve_body: BodyRoute) -> None:
    """`serve_body` is the app's model route for a body read already (`app.serve_body`)."""
    app[_SERVE_BODY] = serve_body
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/embed", _embedding_route(legacy=False))
    app.router.add_post("/api/embeddings", _embedding_route(legacy=True))
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    for op in ("pull", "push", "create", "copy"):
        app.router.add_post(f"/api/{op}", _not_managed(op))
    app.router.add_delete("/api/delete", _not_managed("delete"))
    app.router.add_route("*", "/api/blobs/{digest}", _not_managed("blobs"))
