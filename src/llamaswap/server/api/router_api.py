"""llama.cpp's router-mode model API: `GET /models`, `POST /models/load`, `POST /models/unload`.

`GET /models` is the `/v1/models` listing (llama.cpp serves the same list on both) whose local
entries carry the router's `status`: `{"value": "loading"|"loaded"|"unloaded"}`, with `args`
(the model's command) while it runs. `/v1/models` keeps llama-swap's two values
(`loaded` = process not stopped).

`POST /models/load` `{"model": …}` loads the model through the scheduler (a swap evicts what
the groups or the matrix say) and answers `{"success": true}` once it is ready; llama.cpp
answers at once and lets clients poll `GET /models`, which works here too.
`POST /models/unload` stops it now (requests in flight on it are cut, as for every unload).
Names are IDs, aliases or active profile pins; errors are the app's JSON errors.
"""

from __future__ import annotations

import shlex
from typing import Any

import orjson
from aiohttp import web

from llamaswap.errors import BadRequest, ModelNotFound
from llamaswap.server.api import profiles
from llamaswap.server.api.admin import model_listing
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState

__all__ = ["add_routes", "router_status"]

_STATUS = {
    ProcessState.STARTING: "loading",
    ProcessState.READY: "loaded",
    ProcessState.STOPPING: "loaded",  # still running until it has stopped
    ProcessState.ASLEEP: "sleeping",
}


def _args(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:  # an unbalanced quote: show it as it is
        return cmd.split()


def router_status(state: AppState, model_id: str) -> dict[str, Any]:
    """llama.cpp router's `status` object for a local model."""
    value = _STATUS.get(state.router.state(model_id), "unloaded")
    status: dict[str, Any] = {"value": value}
    if value != "unloaded":
        status["args"] = _args(state.config.models[model_id].cmd)
    return status


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = model_listing(state)
    for entry in data:
        meta = entry.get("meta", {}).get("llamaswap", {})
        if meta.get("type") == "model":
            entry["status"] = router_status(state, entry["id"])
        elif meta.get("type") == "alias":
            entry["status"] = router_status(state, meta["modelID"])
    return web.json_response({"object": "list", "data": data})


async def _model_id(request: web.Request) -> str:
    """The local model named by the body's `model`."""
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    name = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest('"model" is required')
    state = request.app[STATE]
    model_id = state.config.resolve_model(profiles.pin_target(state, name) or name)
    if model_id is None:
        raise ModelNotFound(f"model {name} not found")
    return model_id


async def load(request: web.Request) -> web.Response:
    model_id = await _model_id(request)
    lease = await request.app[STATE].router.acquire(model_id)
    lease.release()
    return web.json_response({"success": True})


async def unload(request: web.Request) -> web.Response:
    model_id = await _model_id(request)
    await request.app[STATE].router.unload([model_id])
    return web.json_response({"success": True})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/models", list_models)
    app.router.add_post("/models/load", load)
    app.router.add_post("/models/unload", unload)
