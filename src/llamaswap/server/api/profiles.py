"""Profiles (spec §2.9): named sets of pins, at most one active, switched over the API.

While a profile is active, a request whose model equals one of its pin names is rewritten to
the pin's target **before** aliases, peers, filters and routing: the JSON body's `model`, the
multipart or urlencoded form field, the `?model=` query parameter or the `/upstream/<pin>/`
path (longest matching name wins there). An empty or null target refuses the name with 404
`no model id could be identified`. None is active at startup and after every reload.

Routes: `GET /api/profiles`, `PUT /api/profiles/active` (`{"name": "<p>"}` or `{"name": null}`).
Every switch (and a reload that clears one) publishes `profileChanged` `{"active": …}`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from llamaswap.config.names import peer_names
from llamaswap.errors import BadRequest, ModelNotFound
from llamaswap.server.api.listing import list_entry
from llamaswap.server.extract import BodyKind, rewrite_multipart_model
from llamaswap.server.state import STATE, AppState
from llamaswap.supervisor import ProcessState

__all__ = [
    "EVENT",
    "NO_MODEL",
    "active_pins",
    "add_routes",
    "changed_payload",
    "listing_entries",
    "pin_target",
    "reset",
    "rewrite_request",
    "set_active",
]

EVENT = "profileChanged"
NO_MODEL = "no model id could be identified"

_MISSING = object()


def active_pins(state: AppState) -> dict[str, str | None]:
    """The active profile's pins ({} when none is active or it vanished in a reload)."""
    if state.active_profile is None:
        return {}
    profile = state.config.profiles.get(state.active_profile)
    return profile.pins if profile is not None else {}


def pin_target(state: AppState, requested: str | None) -> str | None:
    """The name to route `requested` by: the pin's target when it is a pin of the active
    profile, else `requested` unchanged. A disabled pin (empty/null target) raises 404."""
    if requested is None:
        return None
    pins = active_pins(state)
    if requested not in pins:
        return requested
    target = pins[requested]
    if not target:
        raise ModelNotFound(NO_MODEL)
    return target


def _rewrite_json(body: bytes, target: str) -> bytes:
    doc = orjson.loads(body)  # already parsed once by shape_request: cannot fail here
    if isinstance(doc, dict):
        doc["model"] = target
        return orjson.dumps(doc)
    return body


def _rewrite_form(text: str, target: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    return urlencode([(k, target if k == "model" else v) for k, v in pairs])


def rewrite_request(
    request: web.Request, kind: BodyKind, body: bytes, requested: str, target: str
) -> tuple[web.Request, bytes]:
    """Put `target` where the request named the pin `requested` (body, form or query)."""
    if target == requested:
        return request, body
    if kind is BodyKind.JSON:
        return request, _rewrite_json(body, target)
    if kind is BodyKind.MULTIPART:
        content_type = request.headers.get("Content-Type", "")
        new_body, new_type = rewrite_multipart_model(body, content_type, target)
        # aiohttp cannot clone a request whose body was read, so the Content-Type cannot be
        # replaced; it only changes when the value holds the boundary or a line break.
        if new_type != content_type:
            raise BadRequest("error parsing multipart form: pin target cannot be encoded")
        return request, new_body
    if kind is BodyKind.FORM and dict(parse_qsl(body.decode("utf-8", "replace"))).get("model"):
        return request, _rewrite_form(body.decode("utf-8", "replace"), target).encode()
    if request.query.get("model") == requested and not body:
        # (With a body the request cannot be cloned: then only the routing follows the pin.)
        query = _rewrite_form(request.query_string, target)
        return request.clone(rel_url=request.rel_url.with_query(query)), body
    return request, body


def changed_payload(state: AppState) -> dict[str, Any]:
    return {"active": state.active_profile}


def set_active(state: AppState, name: str | None) -> None:
    """Switch the active profile (no validation) and publish `profileChanged` if it changed."""
    if state.active_profile == name:
        return
    state.active_profile = name
    state.router.events.publish(EVENT, changed_payload(state))


def reset(state: AppState) -> None:
    """After a reload: no profile is active."""
    set_active(state, None)


def listing_entries(state: AppState, now: int) -> list[dict[str, Any]]:
    """`/v1/models` entries for active pins that do not shadow an existing name."""
    pins = active_pins(state)
    if not pins:
        return []
    config = state.config
    peers = peer_names(config)
    entries = []
    for pin in sorted(pins):
        if config.resolve_model(pin) is not None or pin in config.selectors or pin in peers:
            continue
        target = pins[pin] or ""
        model_id = config.resolve_model(target) if target else None
        loaded = model_id is not None and state.router.state(model_id) not in (
            ProcessState.STOPPED,
            ProcessState.SHUTDOWN,
        )
        meta = {"type": "profile", "profile": state.active_profile, "target": target}
        entries.append(list_entry(pin, now, meta=meta, loaded=loaded))
    return entries


async def list_profiles(request: web.Request) -> web.Response:
    state = request.app[STATE]
    profiles = [
        {"name": name, "description": p.description, "pins": dict(p.pins)}
        for name, p in sorted(state.config.profiles.items())
    ]
    return web.json_response({"active": state.active_profile, "profiles": profiles})


async def put_active(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise BadRequest("invalid profile request")
    name = doc.get("name", _MISSING)
    if name is _MISSING:
        raise BadRequest("profile name is required")
    if name is not None and not isinstance(name, str):
        raise BadRequest("profile name must be a string or null")
    if name is not None and name not in state.config.profiles:
        raise ModelNotFound(f'profile "{name}" not found')
    set_active(state, name)
    return web.json_response(changed_payload(state))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/profiles", list_profiles)
    app.router.add_put("/api/profiles/active", put_active)
