"""How each model's requests have been arriving: the batch policy's sense of "more is coming".

A loaded model whose requests keep arriving is worth keeping even in the short gaps where
nothing of it is in flight: swapping it away then costs a load now and another when its next
request comes. Each model's gap between arrivals is averaged (EWMA); more is expected for
`patience` average gaps after its last arrival. A burst that has ended stops being expected
within a few of its short gaps; a steady trickle keeps its model while it lasts, until
another model's request is overdue. Pure.
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

    def expected_until(self, model: str) -> float | None:
        """Until when another request for `model` is expected (None: nothing to go by)."""
        stream = self._streams.get(model)
        if stream is None or stream.gap is None or self._patience <= 0:
            return None
        return stream.last + self._patience * stream.gap

    def expects_more(self, model: str, now: float) -> bool:
        until = self.expected_until(model)
        return until is not None and now < until
