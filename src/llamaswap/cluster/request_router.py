"""Residency-aware routing with Ray Serve's request-router API (alpha in Ray 2.x).

Serve calls `choose_replicas` for each request to the node deployment; we rank the node
replicas with `ranking.rank` from their reports (`record_routing_stats`, refreshed every
`STATS_PERIOD_S`) and from what this router itself sent a moment ago, which the reports do
not show yet. Which node a replica serves comes from its Ray node's resources, so routing
is right before the first report arrives, and a node never gets a model it may not run.

The API is alpha; two of its behaviours had to be worked around: a found replica goes to
the request it was chosen for (`_get_pending_request_matching_metadata`), and an empty
choice backs off (`should_backoff` in `choose_replicas`).
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import (
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from llamaswap.cluster.placement import cluster_node_of
from llamaswap.cluster.ranking import Residency, rank
from llamaswap.config.model import ClusterConfig

STATS_PERIOD_S = 0.5
# A model sent to a replica counts as loading there this long, covering the report's age,
RECENT_S = 4 * STATS_PERIOD_S + 2.0
# unless the node made a report this long after the send: by then its report shows the
# model if it is there (it was not, or was unloaded since).
REPORT_SEES_S = 1.0


class ResidencyRouter(RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        """`nodes`: node name -> `{"resources": ..., "models": [...]}` (models resolved)."""
        nodes: dict[str, dict[str, Any]] = kwargs["nodes"]
        self._cluster = ClusterConfig.model_validate(
            {"nodes": {n: {"resources": v["resources"]} for n, v in nodes.items()}}
        )
        self._allowed = {n: frozenset(v["models"]) for n, v in nodes.items()}
        self._node_names: dict[str, str | None] = {}
        self._sent: dict[tuple[str, ReplicaID], float] = {}

    def _node_of(self, replica: RunningReplica) -> str | None:
        if replica.node_id not in self._node_names:
            self._node_names[replica.node_id] = cluster_node_of(self._cluster, replica.node_id)
        return self._node_names[replica.node_id]

    def _residency(self, replica: RunningReplica, name: str) -> Residency:
        reported = Residency.from_stats(replica.routing_stats or {})
        base = reported if reported is not None and reported.node == name else Residency(name)
        # The config is the authority on what a node may run, not the report.
        return Residency(
            node=name,
            models=self._allowed.get(name, frozenset()),
            ready=base.ready,
            starting=base.starting,
            inflight=base.inflight,
            limits=base.limits,
            evictions=base.evictions,
            draining=base.draining,
            at=base.at,
        )

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        kwargs = pending_request.kwargs if pending_request is not None else {}
        model = kwargs.get("model")
        target = kwargs.get("node")
        # Drained nodes, as the ingress knows them now (`avoid`) and as they report it
        # (which covers an ingress that restarted and forgot); a request aimed at one node
        # (`node`: the ingress asking every node) still reaches it.
        avoid = frozenset(kwargs.get("avoid") or ())
        now = time.time()
        candidates: list[tuple[ReplicaID, Residency]] = []
        by_id: dict[ReplicaID, RunningReplica] = {}
        for replica in candidate_replicas:
            name = self._node_of(replica)
            if name is None or (target is not None and name != target):
                continue
            residency = self._residency(replica, name)
            if target is None and (name in avoid or residency.draining):
                continue
            by_id[replica.replica_id] = replica
            candidates.append((replica.replica_id, residency))
        recent = (
            {rid: self._recent(model, rid, residency, now) for rid, residency in candidates}
            if model is not None
            else None
        )
        if pending_request is not None:
            # Every tier is offered at once, so when none takes the request Serve should
            # back off before asking again: without this flag it asks again at once, and a
            # model whose only node is down spins the router's event loop, starving the
            # replica-set update that would bring the node back.
            pending_request.routing_context.should_backoff = True
        return [[by_id[rid] for rid in tier] for tier in rank(candidates, model, recent)]

    def _recent(self, model: str, replica: ReplicaID, residency: Residency, now: float) -> bool:
        """Whether this router sent `model` to `replica` so lately that its report may not
        show it yet. (Wall clocks: the report's time comes from the node's machine.)"""
        sent = self._sent.get((model, replica))
        if sent is None or now - sent >= RECENT_S:
            return False
        return residency.at < sent + REPORT_SEES_S

    def _get_pending_request_matching_metadata(
        self, request_metadata: Any = None
    ) -> PendingRequest | None:
        """The request whose routing found the replica gets it (Serve's hook, private).

        Serve's router hands a found replica to the oldest waiting request, not to the one
        it was chosen for (only its multiplexing mixin matches them). Our choice depends on
        the request's model, so the replica must go to the request it was chosen for."""
        for pending in self._pending_requests_to_fulfill:
            if pending.metadata is request_metadata and not pending.future.done():
                return pending
        return None

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        model = pending_request.kwargs.get("model")
        if model is not None:
            now = time.time()
            self._sent = {k: t for k, t in self._sent.items() if now - t < RECENT_S}
            self._sent[(model, replica_id)] = now
