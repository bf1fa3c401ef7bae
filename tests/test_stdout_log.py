"""The stdout handler flushes once per event-loop iteration, and at once off the loop."""

from __future__ import annotations

import asyncio
import io
import logging

from llamaswap.stdout_log import CoalescingStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[str] = []  # what had been written at each flush

    def flush(self) -> None:
        self.flushes.append(self.getvalue())
        super().flush()


def logger_writing_to(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"stdout-log-test-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = CoalescingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


async def test_lines_of_one_loop_iteration_are_flushed_together_before_the_next() -> None:
    stream = CountingStream()
    logger = logger_writing_to(stream)
    for n in range(3):
        logger.info("line %d", n)
    assert stream.flushes == []  # nothing flushed in the middle of the batch
    await asyncio.sleep(0)  # one loop iteration: the flush callback runs
    assert stream.flushes == ["line 0\nline 1\nline 2\n"]
    logger.info("line 3")
    await asyncio.sleep(0)
    assert stream.flushes[-1] == "line 0\nline 1\nline 2\nline 3\n"
    assert len(stream.flushes) == 2


def test_without_a_running_loop_each_line_is_flushed_at_once() -> None:
    stream = CountingStream()
    logger = logger_writing_to(stream)
    logger.info("a")
    logger.info("b")
    assert stream.flushes == ["a\n", "a\nb\n"]


async def test_lines_from_another_thread_are_flushed_at_once() -> None:
    stream = CountingStream()
    logger = logger_writing_to(stream)
    await asyncio.to_thread(logger.info, "from a thread")
    assert stream.flushes == ["from a thread\n"]
