"""Which node is which, and the config each node replica runs. Pure (no Ray).

A node replica runs the same llamaswap server as one machine does, over the config with
every model its node may not run taken out, so its scheduler never loads (or evicts for)
a model the cluster section keeps elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from llamaswap.config.model import ClusterConfig, ClusterNode, Config

# Every node replica asks Ray for a sliver of this resource, so Serve places replicas only
# on machines started with it (`ray start --resources '{"llamaswap": 1, ...}'`).
NODE_RESOURCE = "llamaswap"
NODE_RESOURCE_SHARE = 0.01


def cluster_problems(config: Config) -> list[str]:
    """Why `config` cannot run as a cluster (empty when it can)."""
    cluster = config.cluster
    if cluster is None or not cluster.nodes:
        return ["the config has no `cluster.nodes` section (docs/cluster.md)"]
    problems: list[str] = []
    for name, node in sorted(cluster.nodes.items()):
        if not node.resources:
            problems.append(f"cluster.nodes.{name}: `resources` is required")
        for model in node.models or []:
            if config.resolve_model(model) is None:
                problems.append(f"cluster.nodes.{name}.models: unknown model {model!r}")
    seen: dict[tuple[tuple[str, float], ...], str] = {}
    for name, node in sorted(cluster.nodes.items()):
        key = tuple(sorted(node.resources.items()))
        if key in seen:
            problems.append(f"cluster.nodes.{name}: same resources as node {seen[key]!r}")
        seen[key] = name
    return problems


def allowed_models(config: Config, node: ClusterNode) -> list[str]:
    """The model IDs a node may run (aliases in its list resolved)."""
    if node.models is None:
        return sorted(config.models)
    return sorted({m for name in node.models if (m := config.resolve_model(name)) is not None})


def node_for_resources(cluster: ClusterConfig, resources: Mapping[str, float]) -> str | None:
    """The node whose declared resources a Ray node has (each at least the declared amount).
    When several match, the one declaring most resources wins (the most specific)."""
    matches = [
        (len(node.resources), name)
        for name, node in cluster.nodes.items()
        if node.resources
        and all(resources.get(key, 0.0) >= amount for key, amount in node.resources.items())
    ]
    return max(matches)[1] if matches else None


def node_tree(tree: dict[str, Any], config: Config, node_name: str) -> dict[str, Any]:
    """A copy of the raw config tree for one node: its models only (group members and
    preloads trimmed to match), its own `devices` when it has some, no `cluster` section.

    Selectors and profiles are served by no node (their targets may live on other nodes);
    in matrix mode the sets name models across the whole config, so every model is kept and
    the node is kept off the others by the request router."""
    assert config.cluster is not None
    node = config.cluster.nodes[node_name]
    out = copy.deepcopy(tree)
    out.pop("cluster", None)
    out.pop("selectors", None)
    out.pop("profiles", None)
    if node.devices is not None:
        out["devices"] = copy.deepcopy(_dig(tree, "cluster", "nodes", node_name, "devices"))
    if node.start_port is not None:
        out["startPort"] = node.start_port
    if config.uses_matrix():
        return out
    keep = set(allowed_models(config, node))
    models = out.get("models")
    if isinstance(models, dict):
        out["models"] = {k: v for k, v in models.items() if k in keep}
    for groups in _group_maps(out):
        for body in groups.values():
            if isinstance(body, dict) and isinstance(body.get("members"), list):
                body["members"] = [m for m in body["members"] if m in keep]
    startup = _dig(out, "hooks", "on_startup")
    if isinstance(startup, dict) and isinstance(startup.get("preload"), list):
        startup["preload"] = [m for m in startup["preload"] if config.resolve_model(m) in keep]
    return out


def _group_maps(tree: dict[str, Any]) -> list[dict[str, Any]]:
    found = [tree.get("groups"), _dig(tree, "routing", "router", "settings", "groups")]
    return [g for g in found if isinstance(g, dict)]


def _dig(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree
