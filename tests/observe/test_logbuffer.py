"""LogBuffer: ring wrap, parents, subscribers and drop counting."""

from __future__ import annotations

import asyncio

import pytest

from llamaswap.observe.logbuffer import LogBuffer


def test_history_and_ring_wrap() -> None:
    buf = LogBuffer(capacity=10)
    buf.write(b"hello ")
    assert buf.history() == b"hello "
    buf.write(b"world!")
    assert buf.history() == b"llo world!"
    buf.write(b"0123456789abcdef")  # larger than capacity: keep the tail
    assert buf.history() == b"6789abcdef"
    buf.write(b"")
    assert buf.history() == b"6789abcdef"
    buf.clear()
    assert buf.history() == b""


def test_invalid_capacity() -> None:
    with pytest.raises(ValueError):
        LogBuffer(capacity=0)


def test_parents_receive_writes() -> None:
    upstream = LogBuffer()
    model_a = LogBuffer(parents=[upstream])
    model_b = LogBuffer(parents=[upstream])
    model_a.write(b"a1\n")
    model_b.write(b"b1\n")
    assert upstream.history() == b"a1\nb1\n"
    assert model_a.history() == b"a1\n"


async def test_subscriber_follows_live_writes() -> None:
    buf = LogBuffer()
    buf.write(b"old")
    got: list[bytes] = []
    sub = buf.subscribe()

    async def follow() -> None:
        async for chunk in sub:
            got.append(chunk)

    task = asyncio.create_task(follow())
    buf.write(b"one")
    buf.write(b"two")
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert got == [b"one", b"two"]
    assert buf.subscriber_count == 0


async def test_full_subscriber_drops_and_counts_without_blocking() -> None:
    buf = LogBuffer()
    slow = buf.subscribe(maxsize=2)
    fast = buf.subscribe(maxsize=100)
    for i in range(5):
        buf.write(b"%d" % i)
    assert slow.dropped == 3 and fast.dropped == 0
    slow.close()  # queue full: iteration still yields what was queued, then ends
    assert [c async for c in slow] == [b"0", b"1"]
    fast.close()
    assert [c async for c in fast] == [b"0", b"1", b"2", b"3", b"4"]


async def test_context_manager_and_close_subscribers() -> None:
    buf = LogBuffer()
    with buf.subscribe() as sub:
        assert buf.subscriber_count == 1
    assert sub.closed and buf.subscriber_count == 0
    async with buf.subscribe() as sub2:
        waiter = asyncio.create_task(sub2.__anext__())
        await asyncio.sleep(0)
        buf.close_subscribers()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, 1)
