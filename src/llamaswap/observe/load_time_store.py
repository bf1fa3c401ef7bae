"""Learned load times kept across restarts, in the activity store's SQLite file.

The scheduler ranks swaps by how long each model takes to load; without this it would start
every run from a guess. The rows live in a table of their own, so the activity table keeps
the shape llama-swap reads. Any trouble with the file is logged once and the times are then
kept in memory only: losing them costs a few guesses, never a request.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedLoadTime:
    """A model's learned load time as saved: seconds, and how many loads it came from."""

    seconds: float
    samples: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS llamaswap_load_times (
    model TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated REAL NOT NULL
)
"""


class LoadTimeFile:
    """Reads and writes learned load times; a no-op when the store is in memory (`path` None)."""

    def __init__(self, path: str | None) -> None:
        self.path = path.strip() if path and path.strip() else None
        self._db: sqlite3.Connection | None = None
        self._failed = False

    def _connection(self) -> sqlite3.Connection | None:
        """The open file, opened on first use. It is never created here: the activity store
        creates it, and an absent file just means no earlier run saved anything."""
        if self._db is not None or self.path is None or self._failed:
            return self._db
        if not Path(self.path).is_file():
            return None
        try:
            uri = f"{Path(self.path).resolve().as_uri()}?mode=rw"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 2000")
            # As the activity store's own connection: in WAL mode a commit then waits for no
            # fsync. Saves happen on the event loop, once per model start; losing the last
            # one in a power cut costs a guess, never a request.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            self._give_up("open", exc)
        return self._db

    def read(self) -> dict[str, SavedLoadTime]:
        """The load times saved by earlier runs ({} when there are none or the file fails)."""
        db = self._connection()
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT model, seconds, samples FROM llamaswap_load_times").fetchall()
        except sqlite3.Error as exc:
            self._give_up("read", exc)
            return {}
        return {
            str(model): SavedLoadTime(float(seconds), int(samples))
            for model, seconds, samples in rows
            if isinstance(seconds, int | float) and seconds >= 0
        }

    def save(self, model: str, seconds: float, samples: int) -> None:
        """Remember `model`'s load time (one small write per completed start)."""
        db = self._connection()
        if db is None:
            return
        try:
            db.execute(
                "INSERT INTO llamaswap_load_times (model, seconds, samples, updated)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET"
                " seconds = excluded.seconds, samples = excluded.samples,"
                " updated = excluded.updated",
                (model, seconds, samples, time.time()),
            )
        except sqlite3.Error as exc:
            self._give_up("write", exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _give_up(self, action: str, exc: sqlite3.Error) -> None:
        log.warning(
            "cannot %s learned load times in %s (%s): keeping them in memory only",
            action,
            self.path,
            exc,
        )
        self._failed = True
        if self._db is not None:
            self._db.close()
        self._db = None
