"""The activity store: one SQLite row per recorded model request (spec §6.1, §6.2 [H]).

In memory by default (`:memory:`), kept to the newest `metricsMaxInMemory` rows. With
`store.path` it is a SQLite file in WAL mode that keeps every row across restarts;
`metricsMaxInMemory` does not apply to it (as in llama-swap), so its history grows until
the operator deletes rows or the file.

Where the work runs: in memory, a row is given its id at once and queued; queued rows are
written in one transaction (then pruned) before every read, so a reader never misses a row.
With nobody reading, nothing is written: the queue keeps only the rows the next prune would
keep (the newest `metricsMaxInMemory`, trimmed every `BATCH_ROWS` rows past that), so its
size is bounded and the rows a reader sees are the same. Row by row, insert plus prune cost
≈70 µs per request under load (≈12% of the proxy's time at 1.7k req/s); batched every 64
rows, ≈2% of it; queued until read, a list append. With `metricsMaxInMemory: 0` (no
pruning) the queue is written every `BATCH_ROWS` rows. It runs inline on the event loop,
after the response's last byte was sent. A file insert measured ≈90 µs and a WAL
checkpoint fsyncs, so a file store writes each row at once on one worker thread of its own;
the `*_async` methods pick the right place. The sync methods are the same work, for tests
and for callers outside the loop.

Query parameters are checked by `parse_activity_query` (pure) with the messages of §5.11.

The file's schema is llama-swap's (spec appendix S, `observe.activity_schema`): each program
reads the rows the other wrote, and a file in llamaswap's older schema is moved over at open.
Timestamps are whole Unix seconds there, as llama-swap writes them.

A file that cannot be used at open (another schema, corrupt, read-only) raises StoreError,
which stops a start or rejects a reload with the file named. A write that fails later (disk
full, I/O error) pauses recording instead: one WARNING, requests are served and not recorded,
and the next write is tried `retry_after` seconds later; recording resumes (logged with the
count of requests missed) once a write succeeds. A read that fails answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from llamaswap.errors import BadRequest, RequestRejected
from llamaswap.observe.activity_schema import ACTIVITY_COLUMNS, describe, open_database
from llamaswap.observe.tokens import TokenMetrics

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "SORT_COLUMNS",
    "ActivityEntry",
    "ActivityQuery",
    "ActivityStore",
    "histogram",
    "parse_activity_query",
    "percentile",
    "reuse_or_open",
]

T = TypeVar("T")
log = logging.getLogger("llamaswap.observe")

DEFAULT_LIMIT = 25
MAX_LIMIT = 999
MIN_BINS = 5
MAX_BINS = 20
# API sort key → column. Only these names ever reach SQL.
SORT_COLUMNS = {
    "id": "id",
    "time": "ts_created",
    "model": "model_id",
    "req_path": "req_path",
    "resp_status_code": "resp_status_code",
    "resp_content_type": "resp_content_type",
    "cached": "cache_tokens",
    "prompt": "input_tokens",
    "generated": "output_tokens",
    "drafted": "draft_tokens",
    "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second",
    "duration": "duration_ms",
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# In memory, rows are written this many at a time (and before any read).
BATCH_ROWS = 64

# After a failed write, the next one is tried this many seconds later.
RETRY_AFTER_S = 10.0
_COLUMNS = ", ".join(ACTIVITY_COLUMNS)
_INSERT_FILE = (
    f"INSERT INTO activity ({', '.join(ACTIVITY_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * (len(ACTIVITY_COLUMNS) - 1))})"
)
_INSERT_MEMORY = (
    f"INSERT INTO activity ({_COLUMNS}) VALUES ({', '.join('?' * len(ACTIVITY_COLUMNS))})"
)


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    """One recorded request; `id` is 0 until the store assigned one."""

    timestamp: float
    model: str
    req_path: str
    resp_content_type: str
    resp_status_code: int
    tokens: TokenMetrics
    duration_ms: int
    error_msg: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    id: int = 0
    has_capture: bool = False

    def as_json(self) -> dict[str, Any]:
        """The [H] ActivityLogEntry JSON (`error_msg`, `metadata` only when non-empty)."""
        out: dict[str, Any] = {
            "id": self.id,
            "timestamp": format_timestamp(self.timestamp),
            "model": self.model,
            "req_path": self.req_path,
            "resp_content_type": self.resp_content_type,
            "resp_status_code": self.resp_status_code,
            "tokens": self.tokens.as_json(),
            "duration_ms": self.duration_ms,
            "has_capture": self.has_capture,
        }
        if self.error_msg:
            out["error_msg"] = self.error_msg
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def format_timestamp(ts: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2026-08-22T10:00:00.123Z`."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- queries --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """A checked `/api/metrics/activity` query; times are unix seconds, ids 0 = unbounded."""

    models: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    min_id: int = 0
    max_id: int = 0
    limit: int = DEFAULT_LIMIT
    page: int = 1
    sort: str = "id"
    order: str = "desc"


def parse_activity_query(params: Mapping[str, Sequence[str]]) -> ActivityQuery:
    """Check query parameters (name → every value given); BadRequest with §5.11's messages.

    Empty values count as absent. `model` may repeat; other parameters use their first value.
    """

    def one(name: str) -> str:
        values = [v.strip() for v in params.get(name, ()) if v.strip()]
        return values[0] if values else ""

    limit = _int_param(one("limit"), DEFAULT_LIMIT, "limit must be between 1 and 999")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest("limit must be between 1 and 999")
    page = _int_param(one("page"), 1, "page must be >= 1")
    if page < 1:
        raise BadRequest("page must be >= 1")
    sort = one("sort") or "id"
    if sort not in SORT_COLUMNS:
        raise BadRequest("invalid sort column")
    order = (one("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc")
    start = _time_param(one("start"), "start")
    end = _time_param(one("end"), "end")
    if start is not None and end is not None and start > end:
        raise BadRequest("start must be before end")
    min_id = _id_param(one("min_id"), "min_id")
    max_id = _id_param(one("max_id"), "max_id")
    if min_id and max_id and min_id > max_id:
        raise BadRequest("min_id must be <= max_id")
    models = tuple(dict.fromkeys(v.strip() for v in params.get("model", ()) if v.strip()))
    return ActivityQuery(models, start, end, min_id, max_id, limit, page, sort, order)


def _int_param(text: str, default: int, message: str) -> int:
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(message) from None


def _id_param(text: str, name: str) -> int:
    value = _int_param(text, 0, f"invalid '{name}' value, use a positive integer")
    if value < 0:
        raise BadRequest(f"invalid '{name}' value, use a positive integer")
    return value


def _time_param(text: str, name: str) -> float | None:
    if not text:
        return None
    message = f"invalid '{name}' timestamp, use RFC3339 format"
    if not _RFC3339.match(text):
        raise BadRequest(message)
    try:
        return dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(message) from None


# ---- statistics (pure) ----------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks of an ascending sequence (0 when empty)."""
    if not ordered:
        return 0.0
    rank = p / 100.0 * (len(ordered) - 1)
    lower, upper = math.floor(rank), math.ceil(rank)
    return ordered[lower] + (rank - lower) * (ordered[upper] - ordered[lower])


def histogram(values: Sequence[float]) -> dict[str, Any] | None:
    """Sturges-binned histogram (5–20 bins) with p50/p95/p99; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    low, high = ordered[0], ordered[-1]
    marks = {f"p{p}": percentile(ordered, p) for p in (50, 95, 99)}
    if low == high:
        return {"bins": [len(ordered)], "min": low, "max": high, "binSize": 0.0, **marks}
    count = min(MAX_BINS, max(MIN_BINS, math.ceil(math.log2(len(ordered))) + 1))
    size = (high - low) / count
    bins = [0] * count
    for value in ordered:
        bins[min(int((value - low) // size), count - 1)] += 1
    return {"bins": bins, "min": low, "max": high, "binSize": size, **marks}


# ---- the store ------------------------------------------------------------------------------


class ActivityStore:
    """SQLite activity rows. Thread-safe; see the module docstring for where work runs.

    StoreError when the file cannot be used. `clock` (monotonic seconds) is for tests of the
    pause after a failed write."""

    def __init__(
        self,
        path: str | None = None,
        max_rows: int = 1000,
        *,
        retry_after: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path.strip() if path and path.strip() else None
        self.max_rows = max_rows
        self.retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        # A file is opened (and checked) now; memory is opened by the first write or read, so
        # a server whose activity nobody reads never builds a database.
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._next_id = 1  # in memory: the next row's id (ids start at 1 in a new database)
        if self.path is not None:
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'activity'"
            ).fetchone()
            self._next_id = int(last) + 1
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="llamaswap-activity")
        self._closed = False
        # In memory: rows waiting to be written (see the module docstring).
        self._pending: list[tuple[Any, ...]] = []
        # When the last write failed (None while recording), and the rows lost since.
        self._failed_at: float | None = None
        self._dropped = 0

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_database(self.path)
        return self._conn

    @property
    def in_memory(self) -> bool:
        return self.path is None

    @property
    def label(self) -> str:
        return self.path or ":memory:"

    @property
    def paused(self) -> bool:
        """True while writes fail (recording paused, see the module docstring)."""
        return self._failed_at is not None

    # ---- sync API ---------------------------------------------------------------------------

    def insert(self, entry: ActivityEntry) -> ActivityEntry:
        """Store `entry`; returns it with its new id, or with id 0 when recording is paused.
        In memory, older rows are pruned."""
        new_id = self.insert_id(entry)
        return replace(entry, id=new_id) if new_id else entry

    def insert_id(self, entry: ActivityEntry) -> int:
        """`insert` returning only the new id (0 when recording is paused): for a caller
        that needs no copy of the entry, which costs as much as the insert itself."""
        row = _row(entry)
        with self._lock:
            if self._failed_at is not None and self._clock() - self._failed_at < self.retry_after:
                self._dropped += 1
                return 0
            if self.in_memory:
                new_id = self._next_id
                self._next_id += 1
                self._pending.append((new_id, *row))
                if self.max_rows <= 0:  # no pruning: the history is written in batches
                    if len(self._pending) >= BATCH_ROWS and not self._flush():
                        return 0
                elif len(self._pending) >= self.max_rows + BATCH_ROWS:
                    # Only the newest max_rows can outlive the prune of the next write, so
                    # the older ones are dropped unwritten: the same rows remain.
                    del self._pending[: -self.max_rows]
                return new_id
            try:
                new_id = int(self._db.execute(_INSERT_FILE, row).lastrowid or 0)
            except sqlite3.Error as exc:
                self._write_failed(exc, 1)
                return 0
            self._write_worked()
        return new_id

    def _flush(self) -> bool:
        """Write the queued rows in one transaction, then prune (in memory). Hold the lock.
        False when the write failed (the rows are lost, recording pauses)."""
        if not self._pending:
            return True
        rows, self._pending = self._pending, []
        try:
            self._db.execute("BEGIN")
            self._db.executemany(_INSERT_MEMORY, rows)
            if self.in_memory and self.max_rows > 0:
                # Ids never repeat, so the newest max_rows are id > last - max.
                self._db.execute(
                    "DELETE FROM activity WHERE id <= ?", (rows[-1][0] - self.max_rows,)
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._write_failed(exc, len(rows))
            return False
        self._write_worked()
        return True

    def _write_failed(self, exc: sqlite3.Error, rows: int) -> None:
        """Pause recording: WARNING once (no traceback), count the lost rows. Hold the lock."""
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        if self._failed_at is None:
            log.warning(
                "activity store %s: %s; recording paused (requests are still served), "
                "trying again every %gs",
                self.label,
                describe(exc),
                self.retry_after,
            )
        self._failed_at = self._clock()
        self._dropped += rows

    def _write_worked(self) -> None:
        if self._failed_at is None:
            return
        log.warning(
            "activity store %s: recording resumed; %d requests were not recorded",
            self.label,
            self._dropped,
        )
        self._failed_at = None
        self._dropped = 0

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """Rows of a query; a failure is a 503 naming the store. Hold the lock."""
        try:
            return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise RequestRejected(
                f"activity store {self.label}: {describe(exc)}", status=503
            ) from None

    def page(
        self, query: ActivityQuery, has_capture: Callable[[int], bool] = lambda _: False
    ) -> dict[str, Any]:
        """`{data, page, limit, total, total_pages}`; `has_capture` asked per returned row."""
        where, args = _where(query)
        column = SORT_COLUMNS[query.sort]
        direction = "ASC" if query.order == "asc" else "DESC"
        order = f"{column} {direction}" + (f", id {direction}" if column != "id" else "")
        with self._lock:
            self._flush()
            total = int(self._read(f"SELECT COUNT(*) FROM activity{where}", args)[0][0])
            rows = self._read(
                f"SELECT {_COLUMNS} FROM activity{where} ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, query.limit, (query.page - 1) * query.limit),
            )
        data = [_entry(row) for row in rows]
        return {
            "data": [replace(e, has_capture=has_capture(e.id)).as_json() for e in data],
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "total_pages": math.ceil(total / query.limit) if total else 0,
        }

    def stats(self, models: Sequence[str] = ()) -> dict[str, Any]:
        """Totals and speed histograms over the retained rows (of `models` when given)."""
        where, args = _where(ActivityQuery(models=tuple(models)))
        with self._lock:
            self._flush()
            count, inputs, outputs, cached = self._read(
                "SELECT COUNT(*), COALESCE(SUM(MAX(input_tokens, 0)), 0),"
                " COALESCE(SUM(MAX(output_tokens, 0)), 0), COALESCE(SUM(MAX(cache_tokens, 0)), 0)"
                f" FROM activity{where}",
                args,
            )[0]
            speeds = self._read(
                f"SELECT prompt_per_second, tokens_per_second FROM activity{where}"
                + (" AND" if where else " WHERE")
                + " (prompt_per_second > 0 OR tokens_per_second > 0)",
                args,
            )
        return {
            "total_requests": int(count),
            "total_input_tokens": int(inputs),
            "total_output_tokens": int(outputs),
            "total_cache_tokens": int(cached),
            "prompt_histogram": histogram([p for p, _ in speeds if p > 0]),
            "gen_histogram": histogram([g for _, g in speeds if g > 0]),
        }

    def close(self) -> None:
        """Write what is queued and close; a failure here is a WARNING (shutdown goes on)."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._lock:
            if self._conn is None:
                return  # memory never read: nothing to write or close
            self._flush()
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                log.warning("activity store %s: closing: %s", self.label, describe(exc))

    # ---- async API: inline in memory, on the store's thread for a file -------------------

    async def insert_async(self, entry: ActivityEntry) -> ActivityEntry:
        return await self._run(self.insert, entry)

    async def page_async(
        self, query: ActivityQuery, has_capture: Callable[[int], bool] = lambda _: False
    ) -> dict[str, Any]:
        # has_capture reads loop-owned state: ask it here, not on the store's thread.
        result = await self._run(self.page, query)
        for row in result["data"]:
            row["has_capture"] = has_capture(row["id"])
        return result

    async def stats_async(self, models: Sequence[str] = ()) -> dict[str, Any]:
        return await self._run(self.stats, models)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _where(query: ActivityQuery) -> tuple[str, tuple[Any, ...]]:
    conditions: list[str] = []
    args: list[Any] = []
    if query.models:
        conditions.append(f"model_id IN ({', '.join('?' * len(query.models))})")
        args.extend(query.models)
    if query.start is not None:
        conditions.append("ts_created >= ?")
        args.append(math.floor(query.start))  # whole seconds, as llama-swap compares
    if query.end is not None:
        conditions.append("ts_created <= ?")
        args.append(math.floor(query.end))
    if query.min_id:
        conditions.append("id >= ?")
        args.append(query.min_id)
    if query.max_id:
        conditions.append("id <= ?")
        args.append(query.max_id)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), tuple(args)


def _row(entry: ActivityEntry) -> tuple[Any, ...]:
    """The columns after `id`, in ACTIVITY_COLUMNS order."""
    t = entry.tokens
    meta = orjson.dumps(dict(entry.metadata)).decode() if entry.metadata else ""
    return (
        math.floor(entry.timestamp),
        entry.model,
        entry.req_path,
        entry.resp_content_type,
        entry.resp_status_code,
        t.cache_tokens,
        t.draft_tokens,
        t.draft_acc_tokens,
        t.input_tokens,
        t.output_tokens,
        t.prompt_per_second,
        t.tokens_per_second,
        entry.duration_ms,
        entry.error_msg,
        meta,
    )


def _entry(row: tuple[Any, ...]) -> ActivityEntry:
    """A row read back; a row another program wrote with unreadable metadata keeps the rest."""
    meta: dict[str, str] = {}
    if row[15]:
        try:
            loaded = orjson.loads(row[15])
        except orjson.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            meta = {str(k): str(v) for k, v in loaded.items()}
    return ActivityEntry(
        id=int(row[0]),
        timestamp=float(row[1]),
        model=str(row[2]),
        req_path=str(row[3]),
        resp_content_type=str(row[4]),
        resp_status_code=int(row[5]),
        tokens=TokenMetrics(
            int(row[6]),
            int(row[7]),
            int(row[8]),
            int(row[9]),
            int(row[10]),
            float(row[11]),
            float(row[12]),
        ),
        duration_ms=int(row[13]),
        error_msg=str(row[14]),
        metadata=meta,
    )


def reuse_or_open(old: ActivityStore | None, path: str | None, max_rows: int) -> ActivityStore:
    """The store for a (re)loaded config: `old` when `store.path` did not change (its history
    and ids carry on; the new `max_rows` applies from the next insert), else a new store (the
    caller closes `old`)."""
    wanted = path.strip() if path and path.strip() else None
    if old is not None and old.path == wanted:
        old.max_rows = max_rows
        return old
    return ActivityStore(wanted, max_rows)
