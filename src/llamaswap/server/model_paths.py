"""The paths of the model routes: where the model name is found, and what the upstream sees.

Shared by the route table (`app`) and the activity recorder (`recording`), which records
POSTs to exactly these paths.
"""

from __future__ import annotations

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


# POSTs recorded in the activity store (spec §6.1 [H]).
RECORDED_PATHS = frozenset((*BODY_ROUTES, *VERSIONLESS_ROUTES))
