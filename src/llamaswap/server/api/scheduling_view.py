"""What the scheduler knows of one model, as `/running` and the `modelStatus` event show it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llamaswap.supervisor.ports import local_port

if TYPE_CHECKING:
    from llamaswap.config.model import Config
    from llamaswap.router import Router


def scheduling_fields(router: Router, model_id: str) -> dict[str, Any]:
    """Requests in flight and queued, the learned start→ready seconds, and the crash-loop
    backoff (None unless the model is backing off)."""
    backoff = router.backoff(model_id)
    return {
        "inFlight": router.lease_count(model_id),
        "queued": router.queued(model_id),
        "loadTimeS": router.load_time(model_id),
        "backoff": None
        if backoff is None
        else {
            "failures": backoff.failures,
            "retryInS": round(router.backoff_left(backoff), 1),
            "lastError": backoff.last_error,
        },
    }


def group_of(config: Config, model_id: str) -> str | None:
    """The swap group `model_id` belongs to (`(default)` when it is in none); None when the
    matrix router decides instead of groups."""
    for name, group in sorted(config.group_map().items()):
        if model_id in group.members:
            return name
    return None


def residency_fields(config: Config, router: Router, model_id: str) -> dict[str, Any]:
    """Where a model runs and how long it stays: its group, ttl, seconds idle and left
    before the ttl unloads it (None unless it is ready with nothing in flight), the local
    port of its upstream and the pid of its process (None when not running)."""
    model = config.models[model_id]
    idle = router.idle_for(model_id)
    ttl = model.ttl
    where = local_port(model.proxy)
    return {
        "group": group_of(config, model_id),
        "ttl": ttl,
        "idleS": None if idle is None else round(idle, 1),
        "unloadInS": None if idle is None or ttl <= 0 else round(max(0.0, ttl - idle), 1),
        "port": None if where is None else where.port,
        "pid": router.processes[model_id].pid,
    }
