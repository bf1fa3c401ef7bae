"""Event bus: ordering, late subscribers, dropping for slow subscribers, closing."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from llamaswap.observe.events import Event, EventBus, Feed


def drain(sub_events: list[Event | None]) -> list[Event]:
    return [e for e in sub_events if e is not None]


def test_event_is_frozen() -> None:
    event = Event("k", 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "x"  # type: ignore[misc]


def test_subscribers_get_only_later_events_in_order() -> None:
    bus = EventBus()
    bus.publish("early", 0)
    sub = bus.subscribe()
    first = bus.publish("a", 1)
    bus.publish("b", {"x": 2})
    got = [sub.get_nowait(), sub.get_nowait(), sub.get_nowait()]
    assert got == [Event("a", 1, 2), Event("b", {"x": 2}, 3), None]
    assert first.seq == 2


def test_kind_filter() -> None:
    bus = EventBus()
    sub = bus.subscribe(kinds=["logData"])
    bus.publish("modelStatus", [])
    bus.publish("logData", "x")
    assert sub.get_nowait() == Event("logData", "x", 2)
    assert sub.get_nowait() is None


def test_full_queue_drops_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=2)
    for i in range(5):
        bus.publish("k", i)
    assert sub.dropped == 3
    assert bus.dropped == 3
    assert sub.pending() == 2
    assert [e.data for e in drain([sub.get_nowait(), sub.get_nowait()])] == [0, 1]


def test_invalid_maxsize() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        EventBus().subscribe(maxsize=0)


async def test_slow_subscriber_never_blocks_publisher_or_others() -> None:
    bus = EventBus()
    slow = bus.subscribe(maxsize=16)  # never read
    fast = bus.subscribe()
    received: list[int] = []

    async def read() -> None:
        async for event in fast:
            received.append(event.data)

    reader = asyncio.create_task(read())
    start = time.perf_counter()
    for i in range(10_000):
        bus.publish("tick", i)
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the reader run; the slow one still reads nothing
    elapsed = time.perf_counter() - start
    fast.close()
    await asyncio.wait_for(reader, timeout=5)

    assert received == list(range(10_000))
    assert slow.pending() == 16
    assert slow.dropped == 10_000 - 16
    assert fast.dropped == 0
    assert elapsed < 2.0  # ~10 ms measured; bounded, independent of the slow reader


async def test_close_drains_queued_events_then_ends() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish("a", 1)
    bus.publish("b", 2)
    bus.close()
    assert bus.subscriber_count == 0
    assert [e.kind async for e in sub] == ["a", "b"]
    assert bus.publish("late", 3).seq == 3


async def test_close_wakes_blocked_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    reader = asyncio.create_task(anext(sub, None))
    await asyncio.sleep(0)  # usually blocks it on the empty queue; passes either way
    bus.close()
    assert await asyncio.wait_for(reader, timeout=5) is None


async def test_close_with_full_queue_still_ends_iteration() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=1)
    bus.publish("a", 1)
    sub.close()
    assert [e.kind async for e in sub] == ["a"]


async def test_subscribe_after_close_is_closed() -> None:
    bus = EventBus()
    bus.close()
    sub = bus.subscribe()
    assert sub.closed
    assert [e async for e in sub] == []


async def test_context_manager_unsubscribes() -> None:
    bus = EventBus()
    async with bus.subscribe() as sub:
        assert bus.subscriber_count == 1
        bus.publish("a", 1)
    assert bus.subscriber_count == 0
    assert sub.closed
    with bus.subscribe():
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0


async def test_feed_is_reusable_for_other_items() -> None:
    closed: list[bool] = []
    feed: Feed[bytes] = Feed(2, on_close=lambda: closed.append(True))
    assert feed.offer(b"a")
    assert feed.offer(b"b")
    assert not feed.offer(b"c")
    feed.close()
    feed.close()
    assert closed == [True]
    assert feed.dropped == 1
    assert [chunk async for chunk in feed] == [b"a", b"b"]


def test_bus_keeps_the_latest_events_of_chosen_kinds_with_their_time() -> None:
    clock = iter(range(100, 200))
    bus = EventBus(history={"swap": 3}, wall_clock=lambda: float(next(clock)))
    for i in range(5):
        bus.publish("swap", {"n": i})
        bus.publish("queue", {"depth": i})
    kept = bus.recent("swap")
    assert [r.event.data["n"] for r in kept] == [2, 3, 4]  # the oldest fell out
    assert [r.at for r in kept] == [102.0, 103.0, 104.0]
    assert bus.recent("queue") == []  # not a kept kind


def test_default_bus_keeps_recent_swaps() -> None:
    bus = EventBus()
    bus.publish("swap", {"target": "a"})
    assert [r.event.data for r in bus.recent("swap")] == [{"target": "a"}]
    assert abs(bus.recent("swap")[0].at - time.time()) < 5


def test_wanted_says_whether_an_event_would_be_kept_or_delivered() -> None:
    bus = EventBus()
    assert not bus.wanted("inflight")  # nobody listens, not kept
    assert bus.wanted("swap")  # kept for `recent`
    filtered = bus.subscribe(kinds=["activity"])
    assert bus.wanted("activity")
    assert not bus.wanted("inflight")
    everything = bus.subscribe()
    assert bus.wanted("inflight")
    everything.close()
    filtered.close()
    assert not bus.wanted("activity")
