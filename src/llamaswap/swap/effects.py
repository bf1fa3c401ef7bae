"""Effects: what the scheduler asks the outside world to do. Frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StopReason(StrEnum):
    """Why a model is being stopped; used in logs, events and metrics labels."""

    EVICT = "evict"
    TTL = "ttl"
    UNLOAD = "unload"


@dataclass(frozen=True)
class Grant:
    """The request may be forwarded to `model`; it now holds a lease on it."""

    request_id: int
    model: str


@dataclass(frozen=True)
class Reject:
    """The request will not be served. `status`/`message`/`code` become the HTTP error."""

    request_id: int
    status: int
    message: str
    code: str | None = None
    # For 429s: seconds after which a retry may succeed (the `Retry-After` header).
    retry_after: float | None = None


@dataclass(frozen=True)
class StartSwap:
    """Stop every model in `evict` (none holds a lease), then make `target` ready.

    The models in `sleep` (a subset of `evict`) are put to sleep instead of stopped (one that
    fails to fall asleep is stopped); with `wake`, the target is asleep and is woken rather
    than started. The caller reports the outcome with `Scheduler.on_swap_done(swap_id,
    error, now, load_time, slept)`.
    """

    swap_id: int
    target: str
    evict: frozenset[str]
    sleep: frozenset[str] = frozenset()
    wake: bool = False


@dataclass(frozen=True)
class StopModels:
    """Stop these models (TTL expiry or an unload); report each with `on_stopped`."""

    models: frozenset[str]
    reason: StopReason


@dataclass(frozen=True)
class CancelStart:
    """Every request waiting for launched swap `swap_id` left: abort the start of `target`.

    The swap still ends with `Scheduler.on_swap_done` (with the abort as its error)."""

    swap_id: int
    target: str


@dataclass(frozen=True)
class QueuePosition:
    """The request is waiting; `position` is 1-based among waiting requests."""

    request_id: int
    position: int


Effect = Grant | Reject | StartSwap | StopModels | CancelStart | QueuePosition
