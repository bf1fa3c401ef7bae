"""How each model's requests have been arriving: the batch policy's sense of "more is coming".

A loaded model whose requests keep arriving is worth keeping even in the short gaps where
nothing of it is in flight: swapping it away then costs a load now and another when its next
request comes. Each model's gap between arrivals is averaged (EWMA); more is expected for
`patience` average gaps after its last arrival, and only from a stream denser than one
request per load time (one person switching models is not held up). A burst that has ended
stops being expected within a few of its short gaps; a steady stream keeps its model while
it lasts, until another model's request is overdue. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Stream:
    last: float
    gap: float | None = None


class Arrivals:
    """Per model: the last arrival and the average gap between arrivals."""

    def __init__(self, weight: float = 0.3, patience: float = 3.0) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError("weight must be in (0, 1]")
        self._weight = weight
        self._patience = patience
        self._streams: dict[str, _Stream] = {}

    def observe(self, model: str, now: float) -> None:
        """A request for `model` arrived at `now`."""
        stream = self._streams.get(model)
        if stream is None:
            self._streams[model] = _Stream(now)
            return
        gap = max(0.0, now - stream.last)
        stream.gap = gap if stream.gap is None else stream.gap + self._weight * (gap - stream.gap)
        stream.last = now

    def expected_until(self, model: str, max_gap: float, hold: float = 0.0) -> float | None:
        """Until when another request for `model` is expected: `patience` average gaps after
        its last one, and at least `hold` seconds. None when there is nothing to go by, or
        when its requests come further apart than `max_gap` on average (the caller passes
        the model's load time: a model asked for less often than it takes to load is not
        worth holding while others wait, e.g. one person switching models)."""
        stream = self._streams.get(model)
        if stream is None or stream.gap is None or self._patience <= 0:
            return None
        if stream.gap > max_gap:
            return None
        return stream.last + max(self._patience * stream.gap, hold)

    def expects_more(self, model: str, now: float, max_gap: float, hold: float = 0.0) -> bool:
        until = self.expected_until(model, max_gap, hold)
        return until is not None and now < until
