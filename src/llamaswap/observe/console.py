"""The stdout log handler: one write to the stream per event-loop pass, not one per record.

`logging.StreamHandler` flushes after every record, which is a `write` system call per
access-log line: under load, one per request (≈3% of the proxy's CPU in P1's profile). Here
a record logged on a thread that runs an event loop is added to the stream's buffer and the
flush is scheduled on that loop once per pass, so the lines of one pass reach stdout in one
write, before the loop waits for I/O again. A record from any other thread (the process
spawner, the activity store's worker) is flushed at once, as `StreamHandler` does; so is
everything at exit (`logging.shutdown` flushes every handler).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO

__all__ = ["ConsoleHandler"]


class ConsoleHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` whose flushes are gathered per event-loop pass (see module doc)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        # The loop a flush is scheduled on, if one is; a loop that closed with the flush still
        # pending is not the running one, so the next record schedules another.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (`Handler.handle`).
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop: nothing will flush later
            self.flush()
            return
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._flush_pass)

    def _flush_pass(self) -> None:
        self.acquire()
        try:
            self._flush_on = None
        finally:
            self.release()
        self.flush()
