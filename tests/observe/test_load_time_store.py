"""Learned load times saved in the store file and read back by the next run."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from llamaswap.observe.load_time_store import LoadTimeFile, SavedLoadTime


def test_saved_times_are_read_back_by_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    sqlite3.connect(path).close()  # the activity store creates the file
    first = LoadTimeFile(str(path))
    first.save("a", 2.5, 1)
    first.save("a", 3.0, 2)
    first.save("b", 0.4, 7)
    first.close()
    saved = LoadTimeFile(str(path)).read()
    assert saved == {"a": SavedLoadTime(3.0, 2), "b": SavedLoadTime(0.4, 7)}


def test_a_save_waits_for_no_fsync(tmp_path: Path) -> None:
    # Saves run on the event loop: like the activity store's connection, commits in WAL
    # mode are not synced to disk one by one (synchronous=NORMAL).
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
    times = LoadTimeFile(str(path))
    times.save("a", 1.0, 1)
    assert times._db is not None
    assert times._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    times.close()


def test_an_in_memory_store_or_an_absent_file_has_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    assert LoadTimeFile(None).read() == {}
    LoadTimeFile(None).save("a", 1.0, 1)
    absent = tmp_path / "later.db"
    times = LoadTimeFile(str(absent))
    assert times.read() == {}
    assert not absent.exists()
    # Once the activity store has created the file, saving works.
    sqlite3.connect(absent).close()
    times.save("a", 1.0, 1)
    assert LoadTimeFile(str(absent)).read() == {"a": SavedLoadTime(1.0, 1)}


def test_a_file_that_is_not_a_database_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not sqlite" * 100)
    times = LoadTimeFile(str(path))
    with caplog.at_level(logging.WARNING):
        assert times.read() == {}
        times.save("a", 1.0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # said once, then kept in memory quietly
    assert str(path) in warnings[0] and "keeping them in memory only" in warnings[0]
    assert path.read_bytes() == b"this is not sqlite" * 100
