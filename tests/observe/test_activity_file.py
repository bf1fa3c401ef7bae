"""The activity store file: llama-swap's schema (spec appendix S), migration of llamaswap's older
schema, unusable files refused with their name, and recording paused while writes fail.

`data/llama-swap-activity.db` was written by llama-swap 0bdb3720 (the [H] build in
../shared/anchors): three requests to the fake upstream (200 JSON, a 500, 200 streamed)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaswap.errors import RequestRejected, StoreError
from llamaswap.observe.activity import ActivityEntry, ActivityQuery, ActivityStore
from llamaswap.observe.tokens import TokenMetrics

FIXTURE = Path(__file__).parent / "data" / "llama-swap-activity.db"
T0 = 1796588600.75

# llamaswap's schema before it took llama-swap's (commit a50d4ac to this change).
OLD_SCHEMA = """
CREATE TABLE activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    req_path TEXT NOT NULL,
    resp_content_type TEXT NOT NULL,
    resp_status_code INTEGER NOT NULL,
    cache_tokens INTEGER NOT NULL,
    draft_tokens INTEGER NOT NULL,
    draft_acc_tokens INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    prompt_per_second REAL NOT NULL,
    tokens_per_second REAL NOT NULL,
    duration_ms INTEGER NOT NULL,
    error_msg TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX activity_ts ON activity (ts);
CREATE INDEX activity_model ON activity (model, id);
"""


def entry(model: str = "m", ts: float = T0, **extra: object) -> ActivityEntry:
    return ActivityEntry(
        timestamp=ts,
        model=model,
        req_path="/v1/chat/completions",
        resp_content_type="application/json",
        resp_status_code=200,
        tokens=TokenMetrics(-1, -1, -1, 7, 3, 12.5, 40.0),
        duration_ms=25,
        **extra,  # type: ignore[arg-type]
    )


def schema(path: Path) -> list[tuple[str, str, str]]:
    """(type, name, sql) of everything in the file but SQLite's own tables."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    finally:
        db.close()
    return [(str(t), str(n), str(s)) for t, n, s in rows]


def goose_versions(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT version_id FROM goose_db_version ORDER BY id").fetchall()
    finally:
        db.close()
    return [int(v) for (v,) in rows]


@pytest.fixture
def go_file(tmp_path: Path) -> Path:
    path = tmp_path / "activity.db"
    shutil.copy(FIXTURE, path)
    return path


@pytest.fixture
def opened(go_file: Path) -> Iterator[ActivityStore]:
    store = ActivityStore(str(go_file))
    yield store
    store.close()


# ---- one schema for both programs ---------------------------------------------------------


def test_rows_llama_swap_wrote_are_read(opened: ActivityStore) -> None:
    page = opened.page(ActivityQuery(order="asc"))
    assert page["total"] == 3
    first, failed, streamed = page["data"]
    assert first["id"] == 1 and first["model"] == "m1"
    assert first["timestamp"] == "2026-12-06T20:21:38.000Z"
    assert first["req_path"] == "/v1/chat/completions"
    assert first["tokens"]["input_tokens"] == 25 and first["tokens"]["output_tokens"] == 10
    assert first["tokens"]["cache_tokens"] == -1
    assert first["metadata"] == {"fifo_priority": "0"}
    assert failed["resp_status_code"] == 500 and failed["error_msg"] == "fake failure 500"
    assert streamed["resp_content_type"] == "text/event-stream"
    by_model = opened.page(ActivityQuery(models=("m1",), sort="time"))
    assert by_model["total"] == 3
    assert opened.stats()["total_input_tokens"] == 50


def test_a_row_written_to_a_llama_swap_file_keeps_its_schema(go_file: Path) -> None:
    before = schema(go_file)
    store = ActivityStore(str(go_file))
    try:
        written = store.insert(entry())
    finally:
        store.close()
    assert written.id == 4  # after llama-swap's ids, from the same sequence
    assert schema(go_file) == before
    assert goose_versions(go_file) == [0, 1]
    db = sqlite3.connect(go_file)
    ts, model = db.execute("SELECT ts_created, model_id FROM activity WHERE id = 4").fetchone()
    db.close()
    # Whole seconds, as llama-swap writes them (its reader scans an integer).
    assert (ts, model) == (int(T0), "m")


def test_a_new_file_has_llama_swaps_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    ActivityStore(str(path)).close()
    assert schema(path) == schema(FIXTURE)
    assert goose_versions(path) == [0, 1]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_time_filters_compare_whole_seconds(opened: ActivityStore) -> None:
    # Rows are at 20:21:38 and 20:21:43; a start inside the first row's second keeps it.
    start = 1796588498.5
    assert opened.page(ActivityQuery(start=start))["total"] == 3
    assert opened.page(ActivityQuery(start=start + 1))["total"] == 2
    assert opened.page(ActivityQuery(end=start))["total"] == 1


def test_metadata_that_is_not_a_json_object_is_left_out(go_file: Path) -> None:
    db = sqlite3.connect(go_file)
    db.execute("UPDATE activity SET metadata_json = '[1, 2' WHERE id = 1")
    db.commit()
    db.close()
    store = ActivityStore(str(go_file))
    try:
        rows = store.page(ActivityQuery(order="asc"))["data"]
    finally:
        store.close()
    assert "metadata" not in rows[0] and rows[1]["metadata"] == {"fifo_priority": "0"}


# ---- llamaswap's older schema moves over ----------------------------------------------------


def test_the_old_schema_is_migrated_keeping_rows_ids_and_sequence(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for i, ts in ((3, 1796588000.9), (5, 1796588001.2)):
        db.execute(
            "INSERT INTO activity VALUES (?, ?, 'old', '/v1/x', 'application/json', 200,"
            " -1, -1, -1, 4, 2, 1.5, 2.5, 9, '', '{\"k\": \"v\"}')",
            (i, ts),
        )
    db.execute("UPDATE sqlite_sequence SET seq = 8 WHERE name = 'activity'")  # 6..8 pruned
    db.commit()
    db.close()

    store = ActivityStore(str(path))
    try:
        rows = store.page(ActivityQuery(order="asc"))["data"]
        assert [(r["id"], r["model"], r["timestamp"]) for r in rows] == [
            (3, "old", "2026-12-06T20:13:20.000Z"),
            (5, "old", "2026-12-06T20:13:21.000Z"),
        ]
        assert rows[0]["metadata"] == {"k": "v"} and rows[0]["tokens"]["input_tokens"] == 4
        assert store.insert(entry()).id == 9  # pruned ids are never given again
    finally:
        store.close()
    assert schema(path) == schema(FIXTURE)
    assert goose_versions(path) == [0, 1]


def test_a_goose_file_whose_migration_stopped_at_version_0_is_completed(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    db = sqlite3.connect(FIXTURE)
    goose_sql = db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'goose_db_version'"
    ).fetchone()[0]
    db.close()
    db = sqlite3.connect(path)
    db.execute(goose_sql)
    db.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1)")
    db.commit()
    db.close()
    ActivityStore(str(path)).close()
    assert schema(path) == schema(FIXTURE)
    assert goose_versions(path) == [0, 1]


def test_llamaswaps_load_time_table_beside_the_rows_is_kept(go_file: Path, tmp_path: Path) -> None:
    """The learned load times (observe.load_time_store) share the file with the rows."""
    lone = tmp_path / "lone.db"
    for path in (go_file, lone):
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.executescript(
                "CREATE TABLE llamaswap_load_times (model TEXT PRIMARY KEY, seconds REAL NOT NULL,"
                " samples INTEGER NOT NULL, updated REAL NOT NULL);"
                "INSERT INTO llamaswap_load_times VALUES ('m1', 2.5, 3, 0);"
            )
        ActivityStore(str(path)).close()
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT model FROM llamaswap_load_times").fetchall() == [("m1",)]
        assert [n for _, n, _ in schema(path) if n != "llamaswap_load_times"] == [
            n for _, n, _ in schema(FIXTURE)
        ]


# ---- unusable files: StoreError naming the file and the fault ------------------------------


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(StoreError) as caught:
        ActivityStore(str(path))
    message = str(caught.value)
    assert str(path) in message and "not an activity store" in message and "users" in message
    assert schema(path) == [
        ("table", "users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    ]


def test_an_activity_table_of_another_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    shutil.copy(FIXTURE, path)
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE activity; CREATE TABLE activity (id INTEGER, what TEXT);")
    db.close()
    with pytest.raises(StoreError, match="lacks the columns ts_created, model_id") as caught:
        ActivityStore(str(path))
    assert str(path) in str(caught.value)


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all, just text\n" * 200)
    with pytest.raises(StoreError, match="is not a SQLite database") as caught:
        ActivityStore(str(path))
    assert str(path) in str(caught.value)


def test_a_damaged_page_is_refused_or_answered_as_503(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    shutil.copy(FIXTURE, path)
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xff" * (4096 * 2)  # overwrite pages 2 and 3 (schema b-trees)
    path.write_bytes(bytes(data))
    try:
        store = ActivityStore(str(path))
    except StoreError as exc:
        assert str(path) in str(exc)
        return
    try:
        with pytest.raises(RequestRejected) as caught:
            store.page(ActivityQuery())
        assert caught.value.status == 503 and str(path) in caught.value.message
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; see the HTTP test")
def test_a_read_only_file_is_refused(go_file: Path) -> None:
    go_file.chmod(0o444)
    with pytest.raises(StoreError, match="read-only") as caught:
        ActivityStore(str(go_file))
    assert str(go_file) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; see the HTTP test")
def test_a_file_in_a_read_only_directory_is_refused(tmp_path: Path, go_file: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="read-only directory") as caught:
            ActivityStore(str(go_file))
    finally:
        tmp_path.chmod(0o755)
    assert str(go_file) in str(caught.value)


# ---- a write that fails later pauses recording ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_disk_pauses_recording_with_one_warning_then_resumes(
    go_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = ActivityStore(str(go_file), retry_after=10.0, clock=clock)
    db = store._db  # the store's own connection: cap the file where it is now
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")
    caplog.set_level(logging.WARNING, "llamaswap.observe")
    try:
        big = "x" * 20000  # needs new pages: SQLITE_FULL
        assert store.insert(entry(error_msg=big)).id == 0
        assert store.paused
        assert store.insert(entry(error_msg=big)).id == 0  # not even tried before retry_after
        clock.now += 11
        assert store.insert(entry(error_msg=big)).id == 0  # tried again, still full
        warnings = [r for r in caplog.records if "recording paused" in r.getMessage()]
        assert len(warnings) == 1
        assert str(go_file) in warnings[0].getMessage()
        assert "disk is full" in warnings[0].getMessage()
        assert warnings[0].exc_info is None
        # Reads still work while writes fail.
        assert store.page(ActivityQuery())["total"] == 3
        db.execute("PRAGMA max_page_count = 1073741823")
        assert store.insert(entry()).id == 0  # within retry_after of the last failure
        clock.now += 11
        assert store.insert(entry()).id == 4
        assert not store.paused
        resumed = [r for r in caplog.records if "recording resumed" in r.getMessage()]
        assert len(resumed) == 1 and "4 requests were not recorded" in resumed[0].getMessage()
    finally:
        store.close()


def test_in_memory_batches_that_fail_pause_recording_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = ActivityStore(max_rows=1000, retry_after=5.0, clock=clock)
    store._db.execute("DROP TABLE activity")  # every write now fails
    caplog.set_level(logging.WARNING, "llamaswap.observe")
    try:
        assert store.insert(entry()).id == 1  # queued: written with the next batch or read
        with pytest.raises(RequestRejected):
            store.page(ActivityQuery())  # the queued write fails (pause), then the read (503)
        assert store.paused
        assert store.insert(entry()).id == 0
        assert sum("recording paused" in r.getMessage() for r in caplog.records) == 1
    finally:
        store.close()
