"""Learned start→ready times per model: an exponentially weighted moving average. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadTime:
    """A model's learned load time in seconds, and how many loads it was learned from."""

    seconds: float
    samples: int


class LoadTimes:
    """EWMA of each model's start→ready time. `seed` carries values over from a previous run."""

    def __init__(self, weight: float, seed: Mapping[str, LoadTime] | None = None) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError("weight must be in (0, 1]")
        self._weight = weight
        self._learned: dict[str, LoadTime] = dict(seed or {})

    def observe(self, model: str, seconds: float) -> LoadTime:
        """Record one measured load; returns the updated estimate."""
        seconds = max(0.0, seconds)
        old = self._learned.get(model)
        if old is None:
            new = LoadTime(seconds, 1)
        else:
            blended = old.seconds + self._weight * (seconds - old.seconds)
            new = LoadTime(blended, old.samples + 1)
        self._learned[model] = new
        return new

    def get(self, model: str) -> LoadTime | None:
        return self._learned.get(model)

    def seconds(self, model: str, default: float) -> float:
        learned = self._learned.get(model)
        return default if learned is None else learned.seconds

    def snapshot(self) -> dict[str, LoadTime]:
        return dict(self._learned)
