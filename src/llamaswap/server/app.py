"""Builds the aiohttp application. The whole route table is in `build_app`.

A model request goes: auth → read body → find the model (JSON / multipart / form / query /
`/upstream/<model>/` path) → resolve aliases → request filters → `router.acquire` (a lease) →
stream to the upstream → release the lease when the last byte is sent or the client leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from llamaswap import __version__
from llamaswap.errors import ModelNotFound, RequestError
from llamaswap.router import Lease
from llamaswap.server import admin, observe_routes, profiles, ui_routes
from llamaswap.server.auth import (
    preflight_response,
    route_needs_auth,
    unauthorized_response,
)
from llamaswap.server.extract import (
    find_model_in_path,
    shape_request,
)
from llamaswap.server.filters import shape_body
from llamaswap.server.forward import forward, new_client_session
from llamaswap.server.loading import LoadingStream, wants_loading_stream
from llamaswap.server.peers import resolve_peer, serve_peer
from llamaswap.server.responses import error_body, error_response, response_for_error
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState

log = logging.getLogger("llamaswap.server")

# Routes whose model comes from the request body (JSON, multipart or form).
BODY_ROUTES = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/reranking",
    "/rerank",
    "/v1/rerank",
    "/v1/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/images/generations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/v1/audio/transcriptions",
    "/v1/images/edits",
    "/audioapi/v1/tasks/run",
)
# Versionless routes: `/v/x` is forwarded as `/x`.
VERSIONLESS_ROUTES = tuple(
    f"/v/{p}"
    for p in (
        "chat/completions",
        "responses",
        "completions",
        "messages",
        "messages/count_tokens",
        "embeddings",
        "rerank",
        "reranking",
    )
)
# Routes whose model comes from `?model=`.
QUERY_ROUTES = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")


def upstream_path(path: str) -> str:
    """The path the upstream sees for a model route."""
    if path.startswith("/v/"):
        return path[2:]
    if path == "/audioapi/v1/tasks/run":
        return "/v1/tasks/run"
    return path


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into an OpenAI-style error; never leak a traceback."""
    accept = request.headers.get("Accept", "")
    try:
        return await handler(request)
    except RequestError as exc:
        return response_for_error(accept, exc)
    except web.HTTPMethodNotAllowed as exc:
        headers = {"Allow": ", ".join(sorted(exc.allowed_methods))}
        return error_response(accept, 405, f"method {request.method} not allowed", headers=headers)
    except web.HTTPNotFound:
        return error_response(accept, 404, "404 page not found")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(accept, exc.status, exc.reason)
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(accept, 500, "internal error")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return preflight_response(request.headers)
    state = request.app[STATE]
    if (
        state.keys.enabled
        and route_needs_auth(request.method, request.path)
        and not state.keys.check(request.headers)
    ):
        return unauthorized_response(request.headers.get("Accept", ""))
    return await handler(request)


async def _serve_model(
    request: web.Request,
    state: AppState,
    model_id: str,
    path: str,
    body: bytes | None,
    loading: LoadingStream | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Hold a lease on `model_id` for the whole exchange with its upstream.

    `headers` replace the client's (e.g. the Content-Type of a rebuilt multipart form)."""
    with state.inflight.track(request, model_id, state.router.events):
        return await _serve_leased(request, state, model_id, path, body, loading, headers)


async def _serve_leased(
    request: web.Request,
    state: AppState,
    model_id: str,
    path: str,
    body: bytes | None,
    loading: LoadingStream | None,
    headers: Mapping[str, str] | None,
) -> web.StreamResponse:
    lease: Lease | None
    if loading is None:
        lease = await state.router.acquire(model_id)
    else:
        lease = await _acquire_with_progress(state, model_id, loading)
    if lease is None:
        assert loading is not None
        return loading.response
    try:
        if state.before_forward is not None:
            await state.before_forward(model_id)
        assert state.session is not None
        timeouts = state.config.models[model_id].timeouts
        return await forward(
            request,
            state.session,
            base_url=lease.upstream,
            path=path,
            body=body,
            connect_timeout=float(timeouts.connect),
            into=loading.response if loading is not None else None,
            extra_headers=headers,
        )
    finally:
        lease.release()


async def _acquire_with_progress(
    state: AppState, model_id: str, loading: LoadingStream
) -> Lease | None:
    """Acquire while streaming progress. Admission (429) is decided before the stream starts;
    a later failure is written into the stream (then None is returned)."""
    acquiring = asyncio.create_task(state.router.acquire(model_id, loading.queue_position))
    await asyncio.sleep(0)  # let the scheduler admit or reject synchronously first
    if acquiring.done():
        return acquiring.result()  # granted at once, or raises 429/404 as a normal error
    try:
        async with loading:
            try:
                lease = await acquiring
            except RequestError as exc:
                await loading.fail(orjson.dumps(error_body(exc.status, exc.message, code=exc.code)))
                return None
            await loading.finish()
            return lease
    except BaseException:
        acquiring.cancel()
        raise


def _resolve(state: AppState, requested: str | None) -> str:
    if not requested:
        raise ModelNotFound("no model id could be identified")
    model_id = state.config.resolve_model(requested)
    if model_id is None:
        raise ModelNotFound("no local server found for requested model")
    return model_id


async def model_route(request: web.Request) -> web.StreamResponse:
    """Inference routes: the model comes from the body or the query."""
    state = request.app[STATE]
    body = await request.read()
    # The raw header: `request.content_type` drops the multipart boundary and reports a
    # missing header as application/octet-stream.
    content_type = request.headers.get("Content-Type")
    shape = shape_request(request.method, content_type, request.query, body)
    if shape.model and (target := profiles.pin_target(state, shape.model)) != shape.model:
        assert target is not None
        request, body = profiles.rewrite_request(request, shape.kind, body, shape.model, target)
        shape = dataclasses.replace(shape, model=target)
    if shape.model and state.config.resolve_model(shape.model) is None:
        peer = resolve_peer(state.config, shape.model)
        if peer is not None:
            path = upstream_path(request.path)
            return await serve_peer(request, state, *peer, shape.kind, path, body)
    model_id = _resolve(state, shape.model)
    requested = shape.model or model_id
    model = state.config.models[model_id]
    body, changed_headers = shape_body(
        shape.kind,
        body,
        request.headers.get("Content-Type", ""),
        use_model_name=model.use_model_name,
        strip_params=model.filters.strip_params,
        set_params=model.filters.set_params,
        set_params_by_id=model.filters.set_params_by_id.get(requested),
    )
    loading = None
    ready = state.router.state(model_id) is ProcessState.READY
    if wants_loading_stream(request.path, shape.stream, model.send_loading_state, ready):
        loading = LoadingStream(request, model_id)
    return await _serve_model(
        request, state, model_id, upstream_path(request.path), body, loading, changed_headers
    )


async def upstream_route(request: web.Request) -> web.StreamResponse:
    """`/upstream/<model>/<path>`: raw passthrough to the model's server (any method)."""
    state = request.app[STATE]
    raw_path = request.raw_path.split("?", 1)[0]
    pins = profiles.active_pins(state)
    found = find_model_in_path(
        raw_path, lambda n: n if n in pins else state.config.resolve_model(n)
    )
    if found is None:
        raise ModelNotFound("model not found")
    requested, rest = found
    if rest == "":
        location = raw_path + "/" + (f"?{request.query_string}" if request.query_string else "")
        status = 301 if request.method in ("GET", "HEAD") else 308
        raise _redirect(status, location)
    model_id = _resolve(state, profiles.pin_target(state, requested))
    # Browsers fetch favicons and assets of an upstream's web page; those must not start
    # a model. (A model stopped between this check and the grant is started: harmless.)
    if state.router.state(model_id) is not ProcessState.READY and _ignored(state, rest):
        raise RequestError(
            f"model {model_id} is not loaded; path matches upstream.ignorePaths", status=409
        )
    body = await request.read()
    return await _serve_model(request, state, model_id, rest, body)


def _ignored(state: AppState, path: str) -> bool:
    return any(re.search(pattern, path) for pattern in state.config.upstream.ignore_paths)


def _redirect(status: int, location: str) -> web.HTTPException:
    if status == 301:
        return web.HTTPMovedPermanently(location)
    return web.HTTPPermanentRedirect(location)


async def _start_session(app: web.Application) -> None:
    app[STATE].session = new_client_session()


async def _close(app: web.Application) -> None:
    state = app[STATE]
    await state.router.shutdown()
    if state.session is not None:
        await state.session.close()


def build_app(state: AppState) -> web.Application:
    """The route table, in one place."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=1024**3)
    app[STATE] = state
    app.on_startup.append(_start_session)
    app.on_cleanup.append(_close)
    for path in (*BODY_ROUTES, *VERSIONLESS_ROUTES):
        app.router.add_post(path, model_route)
    for path in QUERY_ROUTES:
        app.router.add_get(path, model_route)
    app.router.add_route("*", "/upstream/{tail:.+}", upstream_route)
    admin.add_routes(app, __version__)
    observe_routes.add_routes(app)
    profiles.add_routes(app)
    ui_routes.add_routes(app)
    return app
