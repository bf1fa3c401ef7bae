"""What the scheduler knows of one model, as `/running` and the `modelStatus` event show it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
