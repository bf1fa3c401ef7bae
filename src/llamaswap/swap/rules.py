"""What the scheduler is told about each model and about itself: plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# The defaults are the config's (one place), re-exported for the pure code and its tests.
from llamaswap.config.model import DEFAULT_CONCURRENCY_LIMIT as DEFAULT_IN_FLIGHT_LIMIT
from llamaswap.config.model import DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT_S, DEFAULT_MIN_RESIDENT_S

__all__ = [
    "DEFAULT_IN_FLIGHT_LIMIT",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WAIT_S",
    "DEFAULT_MIN_RESIDENT_S",
    "Admission",
    "Backoff",
    "ModelRules",
    "Policy",
    "SchedulerSettings",
]


class Policy(StrEnum):
    """In which order waiting requests are served when models must swap.

    `fifo` is llama-swap's order: priority, then arrival; the first waiting request for a model
    that is not loaded plans its swap at once. `batch` serves the loaded models' requests first
    and loads next the model with the most waiting work per swap, while no request waits
    longer than its `max_wait` (it then goes next)."""

    FIFO = "fifo"
    BATCH = "batch"


class Admission(StrEnum):
    """What happens to a request over a model's limit.

    `limit`: llama-swap's `concurrencyLimit`: every admitted request (waiting or served) counts
    and the excess is refused with 429 at once. `queue`: at most `concurrency_limit` requests
    are in flight to the upstream; the rest wait, up to `max_queue` of them."""

    LIMIT = "limit"
    QUEUE = "queue"


@dataclass(frozen=True)
class ModelRules:
    """Per-model scheduling settings taken from the config."""

    priority: int = 0
    concurrency_limit: int = DEFAULT_IN_FLIGHT_LIMIT
    ttl: float = 0.0
    admission: Admission = Admission.QUEUE
    max_queue: int = DEFAULT_MAX_QUEUE
    max_wait: float = DEFAULT_MAX_WAIT_S


@dataclass(frozen=True)
class Backoff:
    """Crash-loop backoff: after `after` failed starts in a row, refuse the model's requests
    for `initial` seconds, doubling on each further failure up to `maximum`."""

    after: int = 3
    initial: float = 5.0
    maximum: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds of backoff after `failures` failed starts in a row (0: none)."""
        if self.after <= 0 or failures < self.after:
            return 0.0
        return float(min(self.maximum, self.initial * 2 ** (failures - self.after)))


@dataclass(frozen=True)
class SchedulerSettings:
    """Settings of the scheduler as a whole."""

    policy: Policy = Policy.FIFO
    min_resident: float = DEFAULT_MIN_RESIDENT_S
    cancel_abandoned_loads: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    # Learned load times: weight of the newest sample, and the initial guess.
    load_time_weight: float = 0.3
    # Batch: more requests are expected for a model for this many of its average gaps
    # between arrivals after its last one (0: never; see `swap.arrivals`).
    patience: float = 6.0
    # Batch: and at least this fraction of the waiting request's `max_wait` after its last
    # one, so a larger `max_wait` trades waits for fewer swaps (see `swap.arrivals`).
    stream_hold: float = 0.25
    default_load_time: float = 5.0
    # Batch: seconds a stop is expected to take, when counting deadlines ahead.
    stop_time: float = 0.2
