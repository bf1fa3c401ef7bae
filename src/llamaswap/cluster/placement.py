"""Which cluster node a Ray node is: matched by the custom resources it was started with."""

from __future__ import annotations

from typing import Any

import ray

from llamaswap.cluster.nodes import node_for_resources
from llamaswap.config.model import ClusterConfig


def ray_node_resources(node_id: str) -> dict[str, float]:
    """The total resources of the Ray node `node_id` (empty when it is gone)."""
    for entry in ray.nodes():
        if entry.get("NodeID") == node_id:
            resources: dict[str, Any] = entry.get("Resources", {})
            return {str(k): float(v) for k, v in resources.items()}
    return {}


def cluster_node_of(cluster: ClusterConfig, node_id: str) -> str | None:
    """The `cluster.nodes` name of the Ray node `node_id`, or None."""
    return node_for_resources(cluster, ray_node_resources(node_id))


def own_node(cluster: ClusterConfig) -> str:
    """The cluster node this process runs on; a replica placed on an unknown machine fails."""
    node_id = ray.get_runtime_context().get_node_id()
    name = cluster_node_of(cluster, node_id)
    if name is None:
        raise RuntimeError(
            f"this Ray node ({node_id}) has the resources of no `cluster.nodes` entry: "
            "start it with `ray start --resources` naming one node's resources"
        )
    return name
