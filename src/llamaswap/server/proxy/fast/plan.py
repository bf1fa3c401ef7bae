"""Which requests the fast path serves, decided from the head and the body (no I/O).

A request is served here only when the aiohttp application would do exactly this with it:
authorise it, read `model` from a JSON body, resolve it to a local model (no profile pin,
no selector, no peer), apply the model's JSON filters, take a lease and forward the result
unchanged. Everything else returns None and is answered by the application: other routes
and methods, failed auth, bodies that are not JSON objects, unknown models (404), the
loading-state stream, websocket upgrades, multipart and form bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaswap.errors import RequestError
from llamaswap.server.extract import BodyKind, shape_request
from llamaswap.server.filters import shape_body
from llamaswap.server.model_paths import BODY_ROUTES, VERSIONLESS_ROUTES, upstream_path
from llamaswap.server.proxy.fast.head import RequestHead
from llamaswap.server.proxy.loading import wants_loading_stream
from llamaswap.server.state import AppState
from llamaswap.supervisor import ProcessState

__all__ = ["FAST_ROUTES", "MAX_FAST_BODY", "Plan", "plan_request", "route_is_fast"]

FAST_ROUTES = frozenset((*BODY_ROUTES, *VERSIONLESS_ROUTES))
# Larger bodies go to aiohttp (which streams them and applies its own size limit).
MAX_FAST_BODY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    model_id: str
    path: str  # what the upstream sees
    body: bytes  # after the model's filters


def route_is_fast(head: RequestHead) -> bool:
    """From the head alone: may this request be one the fast path serves?"""
    return (
        head.method == "POST"
        and head.path in FAST_ROUTES
        and head.content_length <= MAX_FAST_BODY
        and "application/json" in head.headers.get("Content-Type", "").lower()
    )


def plan_request(state: AppState, head: RequestHead, body: bytes) -> Plan | None:
    """How to serve the request here, or None to leave it to the application."""
    keys = state.keys
    if keys.enabled and not keys.check(head.headers):
        return None
    if state.active_profile is not None:
        return None  # pins may rewrite the request (`profiles.rewrite_request`)
    config = state.config
    try:
        shape = shape_request(head.method, head.headers.get("Content-Type"), {}, body)
    except RequestError:
        return None
    requested = shape.model
    if shape.kind is not BodyKind.JSON or not requested or requested in config.selectors:
        return None
    model_id = config.resolve_model(requested)
    if model_id is None:
        return None
    model = config.models[model_id]
    if not model.proxy.startswith("http://"):
        return None  # the lean upstream client speaks plain HTTP only
    ready = state.router.state(model_id) is ProcessState.READY
    if wants_loading_stream(head.path, shape.stream, model.send_loading_state, ready):
        return None
    filters = model.filters
    set_by_id = filters.set_params_by_id.get(requested)
    if not (model.use_model_name or filters.strip_params or filters.set_params or set_by_id):
        return Plan(model_id, upstream_path(head.path), body)  # no filter: the body as sent
    try:
        shaped, changed = shape_body(
            shape.kind,
            body,
            head.headers.get("Content-Type", ""),
            use_model_name=model.use_model_name,
            strip_params=filters.strip_params,
            set_params=filters.set_params,
            set_params_by_id=set_by_id,
        )
    except RequestError:
        return None
    if changed:
        return None
    return Plan(model_id, upstream_path(head.path), shaped)
