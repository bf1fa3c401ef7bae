"""`/upstream/<model>/<path>`: raw passthrough to a model's own server (any method)."""

from __future__ import annotations

import re

from aiohttp import web

from llamaswap.errors import ModelNotFound, RequestError
from llamaswap.server import profiles
from llamaswap.server.extract import find_model_in_path
from llamaswap.server.serving import resolve_local, serve_model
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState


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
    model_id = resolve_local(state, profiles.pin_target(state, requested))
    # Browsers fetch favicons and assets of an upstream's web page; those must not start
    # a model. (A model stopped between this check and the grant is started: harmless.)
    if state.router.state(model_id) is not ProcessState.READY and _ignored(state, rest):
        raise RequestError(
            f"model {model_id} is not loaded; path matches upstream.ignorePaths", status=409
        )
    body = await request.read()
    return await serve_model(request, state, model_id, rest, body)


def _ignored(state: AppState, path: str) -> bool:
    return any(re.search(pattern, path) for pattern in state.config.upstream.ignore_paths)


def _redirect(status: int, location: str) -> web.HTTPException:
    if status == 301:
        return web.HTTPMovedPermanently(location)
    return web.HTTPPermanentRedirect(location)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/upstream/{tail:.+}", upstream_route)
