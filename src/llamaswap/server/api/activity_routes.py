"""`/api/metrics/activity`, `/api/metrics/stats` and `/api/captures/<id>` (spec §6.1, §6.2).

Rows come from the activity store; `has_capture` is asked of the live capture buffer for
every row returned, since captures are evicted independently of rows. Bad parameters are
400s with llama-swap's messages (raised as `BadRequest`, so the answer follows `Accept`).
"""

from __future__ import annotations

from aiohttp import web

from llamaswap.errors import BadRequest, RequestError
from llamaswap.observe.activity import parse_activity_query
from llamaswap.server.state import STATE

__all__ = ["add_routes"]


def _params(request: web.Request) -> dict[str, list[str]]:
    return {name: request.query.getall(name) for name in request.query}


async def activity(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = parse_activity_query(_params(request))
    captures = state.captures
    page = await state.activity.page_async(query, has_capture=lambda i: i in captures)
    return web.json_response(page)


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    models = [m.strip() for m in request.query.getall("model", []) if m.strip()]
    return web.json_response(await state.activity.stats_async(models))


async def capture(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        capture_id = int(request.match_info["id"])
    except ValueError:
        raise BadRequest("invalid capture ID") from None
    found = state.captures.get(capture_id)
    if found is None:
        raise RequestError("capture not found", status=404)
    return web.json_response(found.as_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/metrics/activity", activity)
    app.router.add_get("/api/metrics/stats", stats)
    app.router.add_get("/api/captures/{id}", capture)
