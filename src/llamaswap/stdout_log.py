"""The stdout log handler: one write per event-loop iteration instead of one per line.

`logging.StreamHandler` flushes after every record, a `write` system call per access log
line (one per request under load). Here a record written on the event loop's thread is
flushed by a callback that runs once the loop has finished its current batch of ready
callbacks, so the lines of all requests answered in that batch go out in one write, in
order and within the same loop iteration. Records from other threads, and any flush while
no loop runs (startup, `logging.shutdown()` at exit), are flushed at once as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO

__all__ = ["CoalescingStreamHandler"]


class CoalescingStreamHandler(logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._flush_due = False

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another thread, or no loop: flush now
            super().flush()
            return
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        super().flush()
