"""The activity store's on-disk schema: llama-swap's (spec appendix S), so one file serves both.

Users switch between llamaswap and llama-swap on the same `store.path`, so the file holds
exactly what llama-swap's migrations make: goose's `goose_db_version` table (rows for version 0,
goose's baseline, and 1, `00001_create_activity.sql`) and the `activity` table with its two
indexes. `prepare` brings an opened database to that shape:

1. no tables (a new or empty file, or memory; llamaswap's side tables do not count): create
   goose's table and rows, then the activity table and indexes, in one transaction, as
   llama-swap's first start does;
2. goose's table present (a file either program made): the activity table must have every
   column we read and write (a newer llama-swap may have added more: rows are written by
   column name); version 0 alone, a migration cut short, gets version 1 applied;
3. llamaswap's schema from before it took llama-swap's (an `activity` table with `ts` and
   `model`, no goose table): the rows move to the shared table in one transaction, with their
   ids and the id sequence, so ids never repeat;
4. anything else is some other program's database, not ours to write into: StoreError.

A file is then probed with a write that changes nothing, so a read-only file or directory is
found at startup, not at the first request. Every sqlite3 error on the way becomes a
StoreError naming the file, with the reason in words (`describe`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from llamaswap.errors import StoreError

__all__ = ["ACTIVITY_COLUMNS", "describe", "open_database", "prepare"]

# Verbatim from llama-swap (goose v3's SQLite dialect and migration 00001), so the file's
# `sqlite_master` reads the same whichever program created it.
_GOOSE_TABLE = """CREATE TABLE goose_db_version (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		version_id INTEGER NOT NULL,
		is_applied INTEGER NOT NULL,
		tstamp TIMESTAMP DEFAULT (datetime('now'))
	)"""
_ACTIVITY_TABLE = """CREATE TABLE activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_created INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    req_path TEXT NOT NULL DEFAULT '',
    resp_content_type TEXT NOT NULL DEFAULT '',
    resp_status_code INTEGER NOT NULL DEFAULT 0,
    cache_tokens INTEGER NOT NULL DEFAULT 0,
    draft_tokens INTEGER NOT NULL DEFAULT 0,
    draft_acc_tokens INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    prompt_per_second REAL NOT NULL DEFAULT 0,
    tokens_per_second REAL NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    error_msg TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT ''
)"""
_ACTIVITY_INDEXES = (
    "CREATE INDEX idx_activity_created_id\n    ON activity (ts_created DESC, id DESC)",
    "CREATE INDEX idx_activity_model_created_id\n"
    "    ON activity (model_id, ts_created DESC, id DESC)",
)
ACTIVITY_COLUMNS = (
    "id",
    "ts_created",
    "model_id",
    "req_path",
    "resp_content_type",
    "resp_status_code",
    "cache_tokens",
    "draft_tokens",
    "draft_acc_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_per_second",
    "tokens_per_second",
    "duration_ms",
    "error_msg",
    "metadata_json",
)
# llamaswap's own schema before this one differed only in two names (and `ts` was REAL).
_OLD_NAMES = {"ts_created": "ts", "model_id": "model"}
_OLD_TABLE = "activity_before_llama_swap_schema"
# Tables llamaswap keeps beside the activity rows (observe.load_time_store); llama-swap
# ignores them, and they alone do not make a file "another program's database".
_OWN_TABLES = frozenset({"llamaswap_load_times"})


def open_database(path: str | None) -> sqlite3.Connection:
    """A connection to `path` (memory when None) with the schema ready; StoreError if unusable.

    Settings as llama-swap's: WAL for a file, and a 5 s busy timeout so both programs can take
    turns on one file."""
    label = path or ":memory:"
    try:
        db = sqlite3.connect(label, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(label, describe(exc)) from None
    try:
        db.execute("PRAGMA busy_timeout=5000")
        if path is not None:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StoreError(label, f"cannot use WAL journal mode (SQLite kept {mode!r})")
            db.execute("PRAGMA synchronous=NORMAL")
        prepare(db, label)
        if path is not None:
            _probe_write(db)
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(label, describe(exc)) from None
    except StoreError:
        db.close()
        raise
    return db


def prepare(db: sqlite3.Connection, label: str) -> None:
    """Bring `db` to the shared schema (decision tree in the module docstring)."""
    tables = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_") and name not in _OWN_TABLES
    }
    if not tables:  # 1.
        _in_transaction(db, lambda: _create(db))
        return
    if "goose_db_version" in tables:  # 2.
        _check_shared(db, label, tables)
        return
    if "activity" in tables and _is_old_schema(db):  # 3.
        _in_transaction(db, lambda: _migrate_old(db))
        return
    found = ", ".join(sorted(tables))  # 4.
    raise StoreError(
        label,
        f"is not an activity store (it holds the tables {found}; llamaswap and llama-swap "
        "keep goose_db_version and activity there): point store.path at a new file",
    )


def describe(exc: sqlite3.Error) -> str:
    """What a sqlite3 error means for the operator, with SQLite's own words after it."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    what = {
        "SQLITE_NOTADB": "is not a SQLite database (a corrupt file, or another kind of file)",
        "SQLITE_CORRUPT": "is corrupt",
        "SQLITE_READONLY": "is read-only",
        "SQLITE_READONLY_DIRECTORY": (
            "is in a read-only directory (SQLite needs to create its -wal and -shm files there)"
        ),
        "SQLITE_CANTOPEN": "cannot be opened (a missing or read-only directory?)",
        "SQLITE_FULL": "the disk is full",
        "SQLITE_BUSY": "is locked by another program",
        "SQLITE_PERM": "access is not permitted",
    }
    base = name.split("_")[:2]
    reason = what.get(name) or what.get("_".join(base)) or "cannot be used"
    if name.startswith("SQLITE_IOERR"):
        reason = "cannot be written (an I/O error: the disk is full or failing?)"
    return f"{reason} ({exc})"


def _in_transaction(db: sqlite3.Connection, work: Callable[[], None]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        work()
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _create(db: sqlite3.Connection) -> None:
    db.execute(_GOOSE_TABLE)
    db.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1)")
    _apply_00001(db)


def _apply_00001(db: sqlite3.Connection) -> None:
    db.execute(_ACTIVITY_TABLE)
    for index in _ACTIVITY_INDEXES:
        db.execute(index)
    db.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (1, 1)")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _check_shared(db: sqlite3.Connection, label: str, tables: set[str]) -> None:
    applied = {
        int(v)
        for (v,) in db.execute("SELECT version_id FROM goose_db_version WHERE is_applied = 1")
    }
    if "activity" not in tables:
        if applied <= {0}:  # goose started, migration 1 did not finish
            _in_transaction(db, lambda: _apply_00001(db))
            return
        raise StoreError(label, "has goose_db_version but no activity table")
    missing = [c for c in ACTIVITY_COLUMNS if c not in _columns(db, "activity")]
    if missing:
        raise StoreError(
            label, f"its activity table lacks the columns {', '.join(missing)} (another schema)"
        )


def _is_old_schema(db: sqlite3.Connection) -> bool:
    old = [_OLD_NAMES.get(c, c) for c in ACTIVITY_COLUMNS]
    return all(c in _columns(db, "activity") for c in old)


def _migrate_old(db: sqlite3.Connection) -> None:
    (seq,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'activity'"
    ).fetchone()
    # Renaming takes the old indexes along; dropping the renamed table drops them.
    db.execute(f"ALTER TABLE activity RENAME TO {_OLD_TABLE}")
    _create(db)
    old = ", ".join(
        "CAST(ts AS INTEGER)" if c == "ts_created" else _OLD_NAMES.get(c, c)
        for c in ACTIVITY_COLUMNS
    )
    db.execute(
        f"INSERT INTO activity ({', '.join(ACTIVITY_COLUMNS)}) SELECT {old} FROM {_OLD_TABLE}"
    )
    db.execute(f"DROP TABLE {_OLD_TABLE}")
    # Rows pruned before the move keep their ids retired: the sequence goes on from the old one.
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'activity'")
    db.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('activity', MAX(?, "
        "(SELECT COALESCE(MAX(id), 0) FROM activity)))",
        (seq,),
    )


def _probe_write(db: sqlite3.Connection) -> None:
    """Fail now if the file cannot be written (SQLite opens a read-only file without a word
    and only refuses at the first write)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DELETE FROM activity WHERE id < 0")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
