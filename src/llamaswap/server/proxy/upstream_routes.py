"""`/upstream/<name>/<path>` and `/comfyui/<path>`: raw passthrough to a model's own server.

`<name>` is the longest configured name at the start of the path: a local model ID or alias,
an active profile's pin, or a peer model (`<peer>/<model>`, or its bare name when only one
peer offers it). The remainder is forwarded as it is (no body filters, no selectors), except
that a remainder with `.` or `..` segments (plain or percent-encoded) is refused with 400.

Local models are served on a lease, like any request, so a swap waits for them; websocket
upgrades hold their lease for as long as the socket is open. Two kinds of traffic never
start a model and so are refused with 409 while it is not ready:

* paths matching `upstream.ignorePaths` (a page's favicon and assets);
* websocket upgrades for a model with `compat.ignoreWebsockets`. These take **no** lease
  either: a swap that evicts the model stops it under them, which closes the socket (1001).
  A browser page that keeps reconnecting its websocket must not hold a model loaded, nor
  load it back after it was swapped out.

`/comfyui/...` serves the fixed model `comfyui_auto` (whose `ignoreWebsockets` is forced on);
only its root `/comfyui/` may start it. Peer models are forwarded to the peer's `proxy` with
its `apiKey`: a peer has no lifecycle here, so neither rule applies to it.
"""

from __future__ import annotations

import re

from aiohttp import web

from llamaswap.config.model import COMFYUI_MODEL_ID
from llamaswap.config.names import peer_names
from llamaswap.errors import BadRequest, ModelNotFound, RequestError
from llamaswap.server.api import profiles
from llamaswap.server.api.peers import resolve_peer, serve_peer_raw
from llamaswap.server.extract import find_model_in_path, has_dot_segment
from llamaswap.server.proxy.serving import resolve_local, serve_model
from llamaswap.server.proxy.websocket import (
    add_shutdown_hook,
    is_websocket_upgrade,
    proxy_websocket,
)
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState


async def upstream_route(request: web.Request) -> web.StreamResponse:
    """`/upstream/<name>/<path>`: raw passthrough to the model's server (any method)."""
    state = request.app[STATE]
    raw_path = request.raw_path.split("?", 1)[0]
    pins = profiles.active_pins(state)
    peers = peer_names(state.config) if state.config.peers else {}

    def known(name: str) -> str | None:
        if name in pins or name in peers or state.config.resolve_model(name) is not None:
            return name
        return None

    found = find_model_in_path(raw_path, known)
    if found is None:
        raise ModelNotFound("model not found")
    requested, rest = found
    if rest == "":
        raise _redirect(request, raw_path + "/")
    _refuse_traversal(rest)
    target = profiles.pin_target(state, requested)
    if target is not None and state.config.resolve_model(target) is None:
        peer = resolve_peer(state.config, target)
        if peer is not None:
            return await serve_peer_raw(request, state, peer[0], rest)
    model_id = resolve_local(state, target)
    # Browsers fetch favicons and assets of an upstream's web page; those must not start
    # a model. (A model stopped between this check and the grant is started: harmless.)
    if state.router.state(model_id) is not ProcessState.READY and _ignored(state, rest):
        raise RequestError(
            f"model {model_id} is not loaded; path matches upstream.ignorePaths", status=409
        )
    return await serve_passthrough(request, state, model_id, rest)


async def comfyui_redirect(request: web.Request) -> web.StreamResponse:
    """`/comfyui` → `/comfyui/` (so the page's relative URLs resolve)."""
    raise _redirect(request, "/comfyui/")


async def comfyui_route(request: web.Request) -> web.StreamResponse:
    """`/comfyui/<path>`: passthrough to `comfyui_auto`; only `/comfyui/` may start it."""
    state = request.app[STATE]
    if COMFYUI_MODEL_ID not in state.config.models:
        raise ModelNotFound(f"local model {COMFYUI_MODEL_ID} not found")
    rest = request.raw_path.split("?", 1)[0].removeprefix("/comfyui")
    _refuse_traversal(rest)
    # An open ComfyUI tab keeps fetching and reconnecting after the model was swapped out;
    # only a deliberate visit of the root loads it back. (Websockets are refused in
    # `serve_passthrough`, with their own message.)
    if (
        rest != "/"
        and not is_websocket_upgrade(request)
        and state.router.state(COMFYUI_MODEL_ID) is not ProcessState.READY
    ):
        raise RequestError(
            f"model {COMFYUI_MODEL_ID} is not loaded; only /comfyui/ can start it", status=409
        )
    return await serve_passthrough(request, state, COMFYUI_MODEL_ID, rest)


async def serve_passthrough(
    request: web.Request, state: AppState, model_id: str, path: str
) -> web.StreamResponse:
    """Forward to a local model: HTTP through `serve_model`, websockets held on a lease (or,
    for `compat.ignoreWebsockets`, on no lease at all)."""
    if not is_websocket_upgrade(request):
        body = await request.read()
        return await serve_model(request, state, model_id, path, body)
    if state.config.models[model_id].compat.ignore_websockets:
        upstream = state.router.upstream_if_ready(model_id)
        if upstream is None:
            raise RequestError(
                f"model {model_id} is not loaded; ignored websocket requests cannot start it",
                status=409,
            )
        return await _websocket(request, state, upstream, path)
    with state.inflight.track(request, model_id, state.router.events):
        lease = await state.router.acquire(model_id)
        try:
            if state.before_forward is not None:
                await state.before_forward(model_id)
            return await _websocket(request, state, lease.upstream, path)
        finally:
            lease.release()


async def _websocket(
    request: web.Request, state: AppState, upstream: str, path: str
) -> web.StreamResponse:
    assert state.session is not None
    return await proxy_websocket(
        request, state.session, base_url=upstream, path=path, keep_host=True
    )


def _refuse_traversal(rest: str) -> None:
    """400 for `..`/`.` segments: the upstream must only ever see paths below the model."""
    if has_dot_segment(rest):
        raise BadRequest("invalid path: '.' and '..' segments are not allowed in upstream paths")


def _ignored(state: AppState, path: str) -> bool:
    return any(re.search(pattern, path) for pattern in state.config.upstream.ignore_paths)


def _redirect(request: web.Request, path: str) -> web.HTTPException:
    """301 for GET/HEAD, 308 (method kept) otherwise; the query string is kept."""
    location = path + (f"?{request.query_string}" if request.query_string else "")
    if request.method in ("GET", "HEAD"):
        return web.HTTPMovedPermanently(location)
    return web.HTTPPermanentRedirect(location)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/upstream/{tail:.+}", upstream_route)
    app.router.add_route("*", "/comfyui", comfyui_redirect)
    app.router.add_route("*", "/comfyui/{tail:.*}", comfyui_route)
    add_shutdown_hook(app)
