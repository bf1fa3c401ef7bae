"""Our own errors in the shape of the API a route belongs to.

`responses` writes every error llamaswap raises in llama-swap's OpenAI-style envelope
(`{"src": "llama-swap", "error": {"message", "type", …}}`). Clients of other APIs parse
their own: Anthropic's SDKs read `{"type": "error", "error": {"type", "message"}}` on
`/v1/messages`, Ollama's clients `{"error": "<message>"}` on `/api/chat` and the other
Ollama routes. This middleware rewrites our envelope (and only ours: an upstream's own
error passes through untouched) for those paths, whatever raised it: auth, a bad body,
an unknown model, a full queue, an unreachable upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from llamaswap.server.responses import SRC

__all__ = [
    "ANTHROPIC_PATHS",
    "OLLAMA_PATHS",
    "anthropic_type",
    "api_errors_middleware",
    "is_ollama_path",
]

ANTHROPIC_PATHS = frozenset(
    {"/v1/messages", "/v1/messages/count_tokens", "/v/messages", "/v/messages/count_tokens"}
)
OLLAMA_PATHS = frozenset(
    {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/tags",
        "/api/ps",
        "/api/show",
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
    }
)
# Anthropic's documented error types by HTTP status.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_ollama_path(path: str) -> bool:
    return path in OLLAMA_PATHS or path.startswith("/api/blobs/")


def anthropic_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def _our_message(response: web.StreamResponse) -> str | None:
    """The message of an error envelope we wrote, else None."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    if not isinstance(response.body, bytes) or response.content_type != "application/json":
        return None
    try:
        doc: Any = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("src") != SRC or not isinstance(doc.get("error"), dict):
        return None
    message = doc["error"].get("message")
    return message if isinstance(message, str) else ""


def _reshaped(response: web.Response, body: dict[str, Any]) -> web.Response:
    out = web.json_response(body, status=response.status)
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            out.headers[name] = value
    return out


@web.middleware
async def api_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    path = request.path
    if path not in ANTHROPIC_PATHS and not is_ollama_path(path):
        return response
    message = _our_message(response)
    if message is None:
        return response
    assert isinstance(response, web.Response)
    if path in ANTHROPIC_PATHS:
        error = {"type": anthropic_type(response.status), "message": message}
        return _reshaped(response, {"type": "error", "error": error})
    return _reshaped(response, {"error": message})
