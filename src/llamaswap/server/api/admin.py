"""Operator and listing routes: /v1/models, /running, /health, unload, version, redirects."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llamaswap.errors import ModelNotFound
from llamaswap.server.api import profiles, selectors
from llamaswap.server.api.devices_view import memory_view
from llamaswap.server.api.listing import CAPABILITY_METADATA_KEYS, capability_fields, list_entry
from llamaswap.server.api.ollama_routes import is_ollama_client
from llamaswap.server.api.scheduling_view import scheduling_fields
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


def _model_entry(state: AppState, model_id: str, listed_id: str, now: int) -> dict[str, Any]:
    model = state.config.models[model_id]
    entry = list_entry(listed_id, now, name=model.name, description=model.description)
    meta: dict[str, Any] = dict(model.metadata)
    if not model.capabilities.is_empty():
        # Configured capabilities win over same-named metadata keys.
        for key in CAPABILITY_METADATA_KEYS:
            meta.pop(key, None)
        entry.update(capability_fields(model.capabilities))
    if listed_id == model_id:
        meta["type"] = "model"
        if model.aliases:
            meta["aliases"] = list(model.aliases)
    else:
        meta.update({"type": "alias", "modelID": model_id})
    entry["meta"] = {"llamaswap": meta}
    if model.capabilities.context:
        entry["meta"]["n_ctx"] = model.capabilities.context
    loaded = state.router.state(model_id) not in (ProcessState.STOPPED, ProcessState.SHUTDOWN)
    entry["status"] = {"value": "loaded" if loaded else "unloaded"}
    return entry


async def list_models(request: web.Request) -> web.Response:
    data = model_listing(_state(request))
    headers = {}
    if origin := request.headers.get("Origin"):
        headers["Access-Control-Allow-Origin"] = origin
    return web.json_response({"object": "list", "data": data}, headers=headers)


def model_listing(state: AppState) -> list[dict[str, Any]]:
    """The `/v1/models` entries, sorted by id."""
    now = int(time.time())
    data = []
    for model_id, model in state.config.models.items():
        if model.unlisted:
            continue
        data.append(_model_entry(state, model_id, model_id, now))
        if state.config.include_aliases_in_list:
            data.extend(_model_entry(state, model_id, alias, now) for alias in model.aliases)
    for peer_id in sorted(state.config.peers):
        for peer_model in state.config.peers[peer_id].models:
            data.append(
                list_entry(
                    f"{peer_id}/{peer_model}",
                    now,
                    name=f"{peer_id}: {peer_model}",
                    meta={"type": "peer", "peerID": peer_id},
                    loaded=False,
                )
            )
    data.extend(profiles.listing_entries(state, now))
    data.extend(selectors.listing_entries(state, now))
    data.sort(key=lambda e: e["id"])
    return data


async def get_model(request: web.Request) -> web.Response:
    """OpenAI's `GET /v1/models/{id}`: the listing's entry for that id."""
    wanted = request.match_info["model"]
    for entry in model_listing(_state(request)):
        if entry["id"] == wanted:
            return web.json_response(entry)
    raise ModelNotFound(f"The model '{wanted}' does not exist", code="model_not_found")


async def running(request: web.Request) -> web.Response:
    state = _state(request)
    entries = []
    for model_id in sorted(state.config.models):
        process_state = state.router.state(model_id)
        stopped = process_state in (ProcessState.STOPPED, ProcessState.SHUTDOWN)
        # A stopped model is listed only while it backs off after failed starts.
        scheduling = scheduling_fields(state.router, model_id)
        if stopped and scheduling["backoff"] is None:
            continue
        model = state.config.models[model_id]
        entries.append(
            {
                "model": model_id,
                "state": process_state.value,
                "cmd": model.cmd,
                "proxy": model.proxy,
                "ttl": model.ttl,
                "name": model.name,
                "description": model.description,
                **scheduling,
                **_process_fields(state, model_id),
            }
        )
    return web.json_response({"running": entries, "memory": memory_view(state)})


def _process_fields(state: AppState, model_id: str) -> dict[str, Any]:
    """What `llamaswap ps` shows of the process: its pid, seconds since it became ready, and
    the idle seconds left before its ttl (or Ollama `keep_alive`) stops it (None: no ttl, or
    not idle)."""
    router = state.router
    ready_since = router.ready_since(model_id)
    idle = router.idle_for(model_id)
    ttl = router.ttl(model_id)
    return {
        "pid": router.processes[model_id].pid,
        "uptimeS": None if ready_since is None else round(time.time() - ready_since, 1),
        "ttlLeftS": None if idle is None or ttl <= 0 else round(max(0.0, ttl - idle), 1),
    }


async def health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def unload_all(request: web.Request) -> web.Response:
    await _state(request).router.unload(None)
    return web.Response(text="OK")


async def api_unload_all(request: web.Request) -> web.Response:
    await _state(request).router.unload(None)
    return web.json_response({"msg": "ok"})


async def api_unload_one(request: web.Request) -> web.Response:
    state = _state(request)
    model_id = state.config.resolve_model(request.match_info["model"])
    if model_id is None:
        raise ModelNotFound("model not found")
    await state.router.unload([model_id])
    return web.Response(text="OK")


async def inflight_list(request: web.Request) -> web.Response:
    return web.json_response({"requests": _state(request).inflight.snapshot()})


async def inflight_cancel(request: web.Request) -> web.Response:
    _state(request).inflight.cancel(request.match_info["id"])
    return web.json_response({"msg": "ok"})


def add_routes(app: web.Application, version: str) -> None:

    async def api_version(_: web.Request) -> web.Response:
        return web.json_response({"version": version, "commit": "", "build_date": ""})

    async def to_ui(request: web.Request) -> web.Response:
        # Ollama's clients check that the server is up with `HEAD /` or `GET /`.
        if is_ollama_client(request.headers):
            return web.Response(text="Ollama is running")
        raise web.HTTPFound("/ui")

    async def to_ui_models(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/models")

    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/running", running)
    app.router.add_get("/health", health)
    app.router.add_get("/wol-health", health)
    app.router.add_get("/unload", unload_all)
    app.router.add_post("/api/models/unload", api_unload_all)
    app.router.add_post("/api/models/unload/{model:.+}", api_unload_one)
    app.router.add_get("/api/version", api_version)
    app.router.add_get("/api/inflight", inflight_list)
    app.router.add_post("/api/inflight/{id}/cancel", inflight_cancel)
    app.router.add_get("/", to_ui)
    app.router.add_get("/upstream", to_ui_models)
