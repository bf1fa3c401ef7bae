"""Where a request for a model should go, from the nodes' residency reports. Pure (no Ray).

Each node replica reports `Residency` (ready and starting models, requests in flight per
model, what loading each model there would evict). `rank` orders the nodes that may run a
model, best first, in tiers:

0. the model is ready there with a free slot;
1. it is loading there, or ready but every slot busy (the request waits, nothing swaps);
2. it is not there: nothing to evict first, then fewer and idler evictions.

Nodes that may not run the model are never ranked. Within a tier Ray picks the replica
with the shortest queue, so the least loaded node of the best tier gets the request.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Eviction:
    """What loading one model on a node would stop: how many models, and their requests."""

    models: int = 0
    busy: int = 0


@dataclass(frozen=True)
class Residency:
    """One node's report (`record_routing_stats`), as plain data that crosses Ray."""

    node: str
    models: frozenset[str] = frozenset()
    ready: frozenset[str] = frozenset()
    starting: frozenset[str] = frozenset()
    inflight: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    evictions: Mapping[str, Eviction] = field(default_factory=dict)
    draining: bool = False  # drained for maintenance: no new requests go there
    at: float = 0.0  # when the node made the report (Unix seconds; 0 = unknown)

    def to_stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "models": sorted(self.models),
            "ready": sorted(self.ready),
            "starting": sorted(self.starting),
            "inflight": dict(self.inflight),
            "limits": dict(self.limits),
            "evictions": {m: [e.models, e.busy] for m, e in self.evictions.items()},
            "draining": self.draining,
            "at": self.at,
        }

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> Residency | None:
        """The report in `stats`, or None when there is none yet (or it is not ours)."""
        if not isinstance(stats.get("node"), str):
            return None
        return cls(
            node=stats["node"],
            models=frozenset(stats.get("models", ())),
            ready=frozenset(stats.get("ready", ())),
            starting=frozenset(stats.get("starting", ())),
            inflight={str(k): int(v) for k, v in stats.get("inflight", {}).items()},
            limits={str(k): int(v) for k, v in stats.get("limits", {}).items()},
            evictions={
                str(k): Eviction(int(v[0]), int(v[1]))
                for k, v in stats.get("evictions", {}).items()
            },
            draining=bool(stats.get("draining", False)),
            at=float(stats.get("at", 0.0)),
        )


def sort_key(residency: Residency, model: str, recent: bool = False) -> tuple[int, int, int]:
    """(tier, evicted models, their requests in flight): smaller is better. `recent` means
    this router sent `model` there a moment ago, so it is loading even if the report (up to
    one report period old) does not show it yet."""
    if model in residency.ready:
        limit = residency.limits.get(model, 0)
        if limit <= 0 or residency.inflight.get(model, 0) < limit:
            return (0, 0, 0)
        return (1, 0, 0)
    if model in residency.starting or recent:
        return (1, 0, 0)
    cost = residency.evictions.get(model, Eviction())
    return (2, cost.models, cost.busy)


def rank(
    candidates: Sequence[tuple[K, Residency]],
    model: str | None,
    recent: Mapping[K, bool] | None = None,
) -> list[list[K]]:
    """Candidates grouped best rank first. Without a model every candidate is one rank."""
    if model is None:
        return [[key for key, _ in candidates]] if candidates else []
    keyed: dict[tuple[int, int, int], list[K]] = {}
    for key, residency in candidates:
        if model not in residency.models:
            continue
        was_sent = bool(recent and recent.get(key))
        keyed.setdefault(sort_key(residency, model, was_sent), []).append(key)
    return [keyed[k] for k in sorted(keyed)]
