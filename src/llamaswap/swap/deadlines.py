"""When a waiting request is due: the batch policy's `maxWait`, counted ahead of time. Pure.

`maxWait` promises that a request's model starts loading at most that long after the request
arrived. Waiting until the promise is broken to act would break it by whatever comes before
the load: the loaded model's requests in flight finishing (they are never cut short), the
stop, and the other due models loaded first, each kept for its batch and `min_resident`.
So the models with waiting requests are lined up by deadline (oldest arrival + `max_wait`,
earliest first) and their load starts projected as if the swaps began now. A model is due
once its projected start reaches its deadline, and so is every model ahead of it in line:
any later, and the promise is broken. With room for one model, max wait ≈ `max_wait` +
its load; when the line is longer than `max_wait` allows (several models overdue at once),
they go earliest deadline first and the later ones wait for the earlier loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """A model whose requests wait for it to be loaded, by the deadline of the oldest."""

    model: str
    deadline: float


@dataclass(frozen=True)
class Timing:
    """What a swap in the line is expected to take (seconds)."""

    load: Callable[[str], float]
    serve: Callable[[str], float]
    min_resident: float
    stop: float


def _cost(entry: Line, timing: Timing) -> float:
    """How long a swap to `entry.model` keeps the next one waiting."""
    hold = max(timing.min_resident, timing.serve(entry.model))
    return timing.load(entry.model) + hold + timing.stop


def latest_starts(ordered: list[Line], start: float, timing: Timing) -> list[float]:
    """For each model of `ordered` (earliest deadline first), the latest its load may start
    if the first swap can begin at `start`: after every model ahead of it in line, and after
    one model behind it, which the batch ranking may send first while nothing is due."""
    costs = [_cost(e, timing) for e in ordered]
    starts: list[float] = []
    at = start
    for i in range(len(ordered)):
        behind = max(costs[i + 1 :], default=0.0)
        starts.append(at + behind)
        at += costs[i]
    return starts


def due(line: Iterable[Line], start: float, timing: Timing) -> dict[str, float]:
    """The due models and their deadlines: every model up to the last one in deadline order
    whose latest start (`latest_starts`) is at or past its deadline."""
    ordered = sorted(line, key=lambda e: e.deadline)
    starts = latest_starts(ordered, start, timing)
    last_late = -1
    for i, (entry, at) in enumerate(zip(ordered, starts, strict=True)):
        if at >= entry.deadline:
            last_late = i
    return {e.model: e.deadline for e in ordered[: last_late + 1]}


def due_at(line: Iterable[Line], start: float, now: float, timing: Timing) -> list[float]:
    """For each model in the line, the time it becomes due if nothing else changes (its
    deadline less the wait ahead of it): the scheduler's next wake-ups."""
    ordered = sorted(line, key=lambda e: e.deadline)
    starts = latest_starts(ordered, start, timing)
    return [e.deadline - (at - now) for e, at in zip(ordered, starts, strict=True)]


def line_of(oldest: Mapping[str, float], max_wait: Mapping[str, float]) -> list[Line]:
    """The line from each waiting model's oldest arrival and its `max_wait`."""
    return [Line(m, arrived + max_wait[m]) for m, arrived in oldest.items()]
