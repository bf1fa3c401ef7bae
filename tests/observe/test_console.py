"""The stdout handler: records reach the stream in order, one flush per event-loop pass."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from llamaswap.observe.console import ConsoleHandler


class CountingStream(io.StringIO):
    """A text stream that counts its flushes and keeps what each flush delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[str] = []
        self._delivered = 0

    def flush(self) -> None:
        super().flush()
        text = self.getvalue()
        self.flushes.append(text[self._delivered :])
        self._delivered = len(text)


def logger_with(stream: CountingStream, name: str) -> logging.Logger:
    logger = logging.getLogger(f"llamaswap.test_console.{name}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = ConsoleHandler(stream)  # type: ignore[arg-type]  # a StringIO is a TextIO
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


def test_without_a_loop_every_record_is_flushed_at_once() -> None:
    stream = CountingStream()
    log = logger_with(stream, "sync")
    log.info("one")
    log.info("two")
    assert stream.flushes == ["one\n", "two\n"]


async def test_records_of_one_pass_are_flushed_together_after_it() -> None:
    stream = CountingStream()
    log = logger_with(stream, "pass")
    for n in range(5):
        log.info("line %d", n)
    assert stream.flushes == []  # not yet: the pass is still running
    await asyncio.sleep(0)  # let the loop run its next pass
    assert stream.flushes == ["".join(f"line {n}\n" for n in range(5))]
    log.info("later")
    await asyncio.sleep(0)
    assert stream.flushes[1:] == ["later\n"]


async def test_a_record_from_another_thread_is_flushed_at_once() -> None:
    stream = CountingStream()
    log = logger_with(stream, "thread")
    thread = threading.Thread(target=log.warning, args=("from a thread",))
    thread.start()
    thread.join()
    assert stream.flushes == ["from a thread\n"]


def test_a_loop_that_closed_before_its_flush_does_not_stop_the_next_ones() -> None:
    stream = CountingStream()
    log = logger_with(stream, "closed")

    async def log_then_stop() -> None:
        log.info("first")
        asyncio.get_running_loop().stop()  # ends the loop before its next pass

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log_then_stop())
    loop.close()
    assert stream.flushes == []  # its flush never ran

    async def log_and_yield() -> None:
        log.info("second")
        await asyncio.sleep(0)

    asyncio.run(log_and_yield())
    assert "".join(stream.flushes) == "first\nsecond\n"
