"""Draining nodes for maintenance: which node a drain request names, and which requests
no node may take while some are drained. Pure (no Ray); the ingress keeps the drained set.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson


def named_node(body: bytes, nodes: Collection[str]) -> tuple[str | None, str]:
    """The node a `{"node": NAME}` body names, or None and why the body is refused."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    name = parsed.get("node") if isinstance(parsed, dict) else None
    known = ", ".join(sorted(nodes))
    if not isinstance(name, str):
        return None, f'the body must be {{"node": NAME}}, NAME one of: {known}'
    if name not in nodes:
        return None, f"no node {name!r} in the cluster config; its nodes: {known}"
    return name, ""


def why_refused(
    model: str | None, allowed: Mapping[str, frozenset[str]], draining: Collection[str]
) -> str | None:
    """Why no node may take a request for `model` (None: some node may), when every node
    that may run it is draining."""
    if not draining:
        return None
    if model is None:
        if all(node in draining for node in allowed):
            return "every node of the cluster is draining"
        return None
    homes = sorted(node for node, models in allowed.items() if model in models)
    if not homes or any(node not in draining for node in homes):
        return None
    names = ", ".join(homes)
    verb = "is" if len(homes) == 1 else "are"
    return (
        f"model {model!r} may run only on {names}, which {verb} draining for maintenance "
        "(POST /cluster/undrain brings a node back)"
    )
