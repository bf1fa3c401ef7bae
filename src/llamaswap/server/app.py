"""Builds the aiohttp application. The whole route table is in `build_app`; the model routes
(body / query) are here, `/upstream/...` is in `upstream_routes`, serving on a lease in `serving`.

A model request goes: auth → read body → find the model (JSON / multipart / form / query /
`/upstream/<model>/` path) → resolve aliases → request filters → `router.acquire` (a lease) →
stream to the upstream → release the lease when the last byte is sent or the client leaves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from llamaswap import __version__
from llamaswap.errors import RequestError
from llamaswap.server.api import (
    admin,
    observe_routes,
    ollama_routes,
    performance_routes,
    profiles,
    router_api,
    selectors,
    ui_routes,
)
from llamaswap.server.api.api_errors import api_errors_middleware
from llamaswap.server.api.peers import resolve_peer, serve_peer
from llamaswap.server.auth import (
    preflight_response,
    route_needs_auth,
    unauthorized_response,
)
from llamaswap.server.body_deadline import body_deadline_middleware
from llamaswap.server.extract import RequestShape, shape_request
from llamaswap.server.filters import shape_body
from llamaswap.server.model_paths import (
    BODY_ROUTES,
    QUERY_ROUTES,
    VERSIONLESS_ROUTES,
    upstream_path,
)
from llamaswap.server.proxy import upstream_routes
from llamaswap.server.proxy.forward import RESPONSE_BUILDER, new_client_session
from llamaswap.server.proxy.loading import LoadingStream, wants_loading_stream
from llamaswap.server.proxy.recording import request_metadata
from llamaswap.server.proxy.serving import resolve_local, serve_model
from llamaswap.server.proxy.upstream_client import UpstreamClient
from llamaswap.server.responses import error_response, response_for_error
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState

log = logging.getLogger("llamaswap.server")


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
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return error_response(accept, 500, "internal error")
        # The client hung up while we wrote to it: nobody to answer, nothing went wrong here.
        log.debug("client left during %s %s", request.method, request.path)
        return web.Response(status=499)
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


async def model_route(request: web.Request) -> web.StreamResponse:
    """Inference routes: the model comes from the body or the query."""
    return await serve_body(request, await request.read())


async def serve_body(request: web.Request, body: bytes) -> web.StreamResponse:
    """A model route whose body was read already (the Ollama routes pass a translated one
    with a request cloned onto the OpenAI path: see `ollama_routes`)."""
    state = request.app[STATE]
    # The raw header: `request.content_type` drops the multipart boundary and reports a
    # missing header as application/octet-stream.
    content_type = request.headers.get("Content-Type")
    shape = shape_request(request.method, content_type, request.query, body)
    if shape.model and (target := profiles.pin_target(state, shape.model)) != shape.model:
        assert target is not None
        request, body = profiles.rewrite_request(request, shape.kind, body, shape.model, target)
        shape = dataclasses.replace(shape, model=target)
    if shape.model not in state.config.selectors:
        return await _route_by_name(request, state, shape, body)
    selector_id = shape.model
    with request.app[selectors.RESERVATIONS].reserve(state, selector_id) as target:
        request, body = profiles.rewrite_request(request, shape.kind, body, selector_id, target)
        request_metadata(request)["selector"] = selector_id  # copied into the activity row
        return await _route_by_name(request, state, dataclasses.replace(shape, model=target), body)


async def _route_by_name(
    request: web.Request, state: AppState, shape: RequestShape, body: bytes
) -> web.StreamResponse:
    """Serve a model route once the name is final: a peer's, or a local model's."""
    if shape.model and state.config.resolve_model(shape.model) is None:
        peer = resolve_peer(state.config, shape.model)
        if peer is not None:
            path = upstream_path(request.path)
            return await serve_peer(request, state, *peer, shape.kind, path, body)
    model_id = resolve_local(state, shape.model)
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
    # A translated request (RESPONSE_BUILDER) owns its response: no loading stream in it.
    translated = RESPONSE_BUILDER in request
    if not translated and wants_loading_stream(
        request.path, shape.stream, model.send_loading_state, ready
    ):
        loading = LoadingStream(request, model_id)
    return await serve_model(
        request, state, model_id, upstream_path(request.path), body, loading, changed_headers
    )


async def _start_session(app: web.Application) -> None:
    app[STATE].session = new_client_session()
    app[STATE].upstream_client = UpstreamClient()


async def _close(app: web.Application) -> None:
    state = app[STATE]
    await state.router.shutdown()
    if state.session is not None:
        await state.session.close()
    if state.upstream_client is not None:
        await state.upstream_client.close()


def build_app(state: AppState) -> web.Application:
    """The route table, in one place."""
    middlewares = [
        body_deadline_middleware,
        api_errors_middleware,
        errors_middleware,
        auth_middleware,
    ]
    app = web.Application(middlewares=middlewares, client_max_size=1024**3)
    app[STATE] = state
    app[selectors.RESERVATIONS] = selectors.Reservations()
    app.on_startup.append(_start_session)
    app.on_cleanup.append(_close)
    for path in (*BODY_ROUTES, *VERSIONLESS_ROUTES):
        app.router.add_post(path, model_route)
    for path in QUERY_ROUTES:
        app.router.add_get(path, model_route)
    upstream_routes.add_routes(app)
    ollama_routes.add_routes(app, serve_body)
    admin.add_routes(app, __version__)
    router_api.add_routes(app)
    observe_routes.add_routes(app)
    performance_routes.add_routes(app)
    profiles.add_routes(app)
    ui_routes.add_routes(app)
    return app
