"""Log ring buffers with history and live followers (spec §7).

A `LogBuffer` keeps the last `capacity` bytes written to it and broadcasts every write to
its subscribers. Writing never blocks: a subscriber whose queue is full misses that chunk
and counts it in `dropped`. A buffer may have parents (a model's buffer feeds the global
"upstream" buffer), which receive every write too.

Only the event-loop thread may call `write` (asyncio queues are not thread-safe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from llamaswap.observe.events import Feed

__all__ = ["DEFAULT_CAPACITY", "LogBuffer", "LogSubscription"]

DEFAULT_CAPACITY = 100 * 1024


class LogSubscription(Feed[bytes]):
    """A live follower of a `LogBuffer`: an async iterator of the chunks written after it began.

    Iteration ends once `close()` was called and the already-queued chunks are consumed.
    """

    def __init__(self, owner: LogBuffer, maxsize: int) -> None:
        super().__init__(maxsize, on_close=lambda: owner._unsubscribe(self))


class LogBuffer:
    """A byte ring buffer of the last `capacity` bytes, broadcasting writes to subscribers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, parents: Sequence[LogBuffer] = ()) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.parents = tuple(parents)
        self._data = bytearray()
        self._subscribers: list[LogSubscription] = []

    def write(self, data: bytes) -> None:
        """Append `data` to the history, hand it to every subscriber and to the parents."""
        if not data:
            return
        if len(data) >= self.capacity:
            self._data[:] = data[-self.capacity :]
        else:
            self._data += data
            overflow = len(self._data) - self.capacity
            if overflow > 0:
                # Deleting from the front of a bytearray is amortised O(1) in CPython.
                del self._data[:overflow]
        for sub in self._subscribers:
            sub.offer(data)
        for parent in self.parents:
            parent.write(data)

    def history(self) -> bytes:
        """Return the retained bytes, oldest first."""
        return bytes(self._data)

    def clear(self) -> None:
        """Forget the history (subscribers stay)."""
        self._data.clear()

    def subscribe(self, maxsize: int = 1024) -> LogSubscription:
        """Start following writes; `maxsize` bounds the chunks queued for this subscriber."""
        sub = LogSubscription(self, maxsize)
        self._subscribers.append(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are currently open."""
        return len(self._subscribers)

    def close_subscribers(self) -> None:
        """End every subscription (for shutdown): their iterations finish."""
        for sub in list(self._subscribers):
            sub.close()

    def _unsubscribe(self, sub: LogSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
