"""The common shape of a `/v1/models` entry (spec §5.5), for models, peers, selectors, pins."""

from __future__ import annotations

from typing import Any


def list_entry(
    listed_id: str,
    now: int,
    *,
    name: str = "",
    description: str = "",
    meta: dict[str, Any] | None = None,
    loaded: bool | None = None,
) -> dict[str, Any]:
    """`{id, object, created, owned_by[, name][, description][, meta][, status]}`; empty
    name/description are left out, as llama-swap does."""
    entry: dict[str, Any] = {
        "id": listed_id,
        "object": "model",
        "created": now,
        "owned_by": "llama-swap",
    }
    if name:
        entry["name"] = name
    if description:
        entry["description"] = description
    if meta is not None:
        entry["meta"] = {"llamaswap": meta}
    if loaded is not None:
        entry["status"] = {"value": "loaded" if loaded else "unloaded"}
    return entry
