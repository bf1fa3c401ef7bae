"""The event bus behind `/api/events` and the internal observers (spec §5.9).

`EventBus.publish` never blocks and never waits for a subscriber: each subscription has a
bounded queue, and an event that does not fit is dropped for that subscriber only and
counted in its `dropped` (a consumer that sees the count grow can resynchronise, e.g. send
a fresh snapshot). Subscribers receive only events published after they subscribed, in
publish order, each stamped with a bus-wide increasing `seq`.

The bus also keeps the last few events of some kinds (`history`: by default the last
`SWAP_HISTORY` swaps and `STATE_HISTORY` process state changes) with the wall-clock time
they were published, so that a client that connects later can be shown what happened
before it came (`recent(kind)`).

Only the event-loop thread may call `publish` (asyncio queues are not thread-safe); code
on other threads uses `loop.call_soon_threadsafe(bus.publish, kind, data)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_MAXSIZE",
    "EVICTION_HISTORY",
    "STATE_HISTORY",
    "SWAP_HISTORY",
    "Event",
    "EventBus",
    "Feed",
    "Recent",
    "Subscription",
]

T = TypeVar("T")

DEFAULT_MAXSIZE = 1024
SWAP_HISTORY = 100
STATE_HISTORY = 4 * SWAP_HISTORY  # a swap is about four changes (starting, ready, stopping…)
EVICTION_HISTORY = 10  # why the last few swaps evicted (see observe.device_memory)
DEFAULT_HISTORY: Mapping[str, int] = {
    "swap": SWAP_HISTORY,
    "modelState": STATE_HISTORY,
    "eviction": EVICTION_HISTORY,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One published fact: its `kind` (e.g. `modelStatus`), payload and bus sequence number."""

    kind: str
    data: Any
    seq: int


@dataclass(frozen=True, slots=True)
class Recent:
    """A kept event and the wall-clock time (`time.time()`) at which it was published."""

    at: float
    event: Event


class Feed(Generic[T]):
    """A bounded, dropping queue read as an async iterator; the reusable half of a subscription.

    The producer calls `offer` (never blocks); the consumer iterates. Iteration ends once
    `close()` was called and the already-queued items are consumed. `on_close` runs once,
    on the first `close()` (the owner uses it to forget the feed). Log followers can use
    the same class with `bytes` items.
    """

    def __init__(self, maxsize: int, on_close: Callable[[], None] | None = None) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=maxsize)
        self._on_close = on_close
        self._closed = False
        self.dropped = 0
        """Number of items this reader missed because its queue was full."""

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._closed

    def pending(self) -> int:
        """Items queued and not yet read."""
        return self._queue.qsize()

    def offer(self, item: T) -> bool:
        """Queue `item` if there is room; False (and counted) when it was dropped."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def get_nowait(self) -> T | None:
        """The next queued item, or None if none is queued (does not wait)."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        """Stop receiving; iteration finishes after the items already queued."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()
        # Wakes a reader blocked on an empty queue; a full queue has no blocked reader.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Subscription(Feed[Event]):
    """A subscriber's feed of the events published after it began, optionally by kind."""

    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[str] | None) -> None:
        super().__init__(maxsize, on_close=lambda: bus._unsubscribe(self))
        self._kinds = kinds

    def wants(self, kind: str) -> bool:
        return self._kinds is None or kind in self._kinds

    def offer(self, item: Event) -> bool:
        """Queue the event if its kind is wanted; False when it was dropped."""
        if self._kinds is not None and item.kind not in self._kinds:
            return True
        return super().offer(item)


class EventBus:
    """Fan-out of events to subscribers with bounded, dropping queues."""

    def __init__(
        self,
        history: Mapping[str, int] = DEFAULT_HISTORY,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`history`: how many of the latest events of each kind to keep for `recent`."""
        self._history: dict[str, deque[Recent]] = {
            kind: deque(maxlen=size) for kind, size in history.items() if size > 0
        }
        self._wall_clock = wall_clock
        self._subscribers: list[Subscription] = []
        self._seq = 0
        self._closed = False
        self.dropped = 0
        """Total events dropped across all subscribers (for metrics)."""

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._closed

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are currently open."""
        return len(self._subscribers)

    def wanted(self, kind: str) -> bool:
        """Whether an event of `kind` published now would be kept or reach a subscriber: a
        publisher whose payload costs something to build may skip an unwanted one."""
        return kind in self._history or any(sub.wants(kind) for sub in self._subscribers)

    def publish(self, kind: str, data: Any) -> Event:
        """Stamp and hand an event to every subscriber without waiting; returns the event.

        After `close()` the event is still stamped and returned but reaches nobody.
        """
        self._seq += 1
        event = Event(kind, data, self._seq)
        kept = self._history.get(kind)
        if kept is not None:
            kept.append(Recent(self._wall_clock(), event))
        for sub in self._subscribers:
            if not sub.offer(event):
                self.dropped += 1
        return event

    def recent(self, kind: str) -> list[Recent]:
        """The kept events of `kind`, oldest first (empty for a kind that is not kept)."""
        return list(self._history.get(kind, ()))

    def subscribe(
        self, maxsize: int = DEFAULT_MAXSIZE, kinds: Iterable[str] | None = None
    ) -> Subscription:
        """Start receiving events; `maxsize` bounds the queue, `kinds` filters by kind.

        On a closed bus the subscription is returned already closed.
        """
        sub = Subscription(self, maxsize, frozenset(kinds) if kinds is not None else None)
        if self._closed:
            sub.close()
        else:
            self._subscribers.append(sub)
        return sub

    def close(self) -> None:
        """End every subscription (shutdown or reload); later subscriptions start closed."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()

    def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
