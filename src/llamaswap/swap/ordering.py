"""The order in which waiting requests are placed, per scheduler policy. Pure.

`fifo` is llama-swap's: priority (higher first), then arrival. `batch` ranks whole models:
  1. due models first (`swap.deadlines`: waiting longer would break a request's `max_wait`),
     earliest deadline first;
  2. then priority (higher first);
  3. then models already loaded (their requests need no swap);
  4. then the most waiting requests per second of (learned) load time: the swap that serves
     the most work for its cost;
  5. then the model whose oldest request came first; within a model, arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass
class Waiting:
    """A request admitted but not yet granted."""

    request_id: int
    model: str
    priority: int
    seq: int
    arrived: float


def fifo_order(queue: Iterable[Waiting]) -> list[Waiting]:
    return sorted(queue, key=lambda w: (-w.priority, w.seq))


@dataclass
class _ModelQueue:
    count: int = 0
    oldest_seq: int = 0
    oldest_arrived: float = 0.0


def batch_order(
    queue: Iterable[Waiting],
    *,
    due: Mapping[str, float],
    ready: frozenset[str],
    load_time: Callable[[str], float],
) -> list[Waiting]:
    waiting = list(queue)
    per_model: dict[str, _ModelQueue] = {}
    for w in waiting:
        entry = per_model.get(w.model)
        if entry is None:
            per_model[w.model] = _ModelQueue(1, w.seq, w.arrived)
            continue
        entry.count += 1
        if w.seq < entry.oldest_seq:
            entry.oldest_seq, entry.oldest_arrived = w.seq, w.arrived

    def key(w: Waiting) -> tuple[int, float, int, int, float, int, int]:
        entry = per_model[w.model]
        deadline = due.get(w.model)
        work_per_second = entry.count / max(load_time(w.model), 1e-3)
        return (
            1 if deadline is None else 0,
            0.0 if deadline is None else deadline,
            -w.priority,
            0 if w.model in ready else 1,
            -work_per_second,
            entry.oldest_seq,
            w.seq,
        )

    return sorted(waiting, key=key)
