"""The SQLite activity store and its query checks (spec §6.1, §6.2, §5.11)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamaswap.errors import BadRequest
from llamaswap.observe.activity import (
    BATCH_ROWS,
    SORT_COLUMNS,
    ActivityEntry,
    ActivityQuery,
    ActivityStore,
    histogram,
    parse_activity_query,
    percentile,
    reuse_or_open,
)
from llamaswap.observe.tokens import TokenMetrics

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()


def entry(
    model: str = "m",
    ts: float = T0,
    *,
    inputs: int = 1,
    outputs: int = 1,
    cached: int = -1,
    prompt_speed: float = -1.0,
    gen_speed: float = -1.0,
    status: int = 200,
    duration: int = 10,
    **extra: Any,
) -> ActivityEntry:
    tokens = TokenMetrics(cached, -1, -1, inputs, outputs, prompt_speed, gen_speed)
    return ActivityEntry(
        timestamp=ts,
        model=model,
        req_path="/v1/chat/completions",
        resp_content_type="application/json",
        resp_status_code=status,
        tokens=tokens,
        duration_ms=duration,
        **extra,
    )


@pytest.fixture
def store() -> Iterator[ActivityStore]:
    s = ActivityStore(max_rows=1000)
    yield s
    s.close()


def ids(page: dict[str, Any]) -> list[int]:
    return [row["id"] for row in page["data"]]


# ---- rows -----------------------------------------------------------------------------------


def test_ids_start_at_one_and_rows_round_trip(store: ActivityStore) -> None:
    first = store.insert(entry(error_msg="boom", metadata={"fifo_priority": "0"}))
    second = store.insert(entry("other", cached=3, status=500))
    assert (first.id, second.id) == (1, 2)
    page = store.page(ActivityQuery(order="asc"))
    assert page["data"][0] == {
        "id": 1,
        "timestamp": "2026-01-02T03:04:05.000Z",
        "model": "m",
        "req_path": "/v1/chat/completions",
        "resp_content_type": "application/json",
        "resp_status_code": 200,
        "tokens": {
            "cache_tokens": -1,
            "draft_tokens": -1,
            "draft_acc_tokens": -1,
            "input_tokens": 1,
            "output_tokens": 1,
            "prompt_per_second": -1.0,
            "tokens_per_second": -1.0,
        },
        "duration_ms": 10,
        "has_capture": False,
        "error_msg": "boom",
        "metadata": {"fifo_priority": "0"},
    }
    # error_msg and metadata are left out when empty
    assert "error_msg" not in page["data"][1]
    assert "metadata" not in page["data"][1]
    assert page["data"][1]["resp_status_code"] == 500


def test_in_memory_store_keeps_the_newest_max_rows() -> None:
    store = ActivityStore(max_rows=3)
    for _ in range(5):
        store.insert(entry())
    page = store.page(ActivityQuery())
    assert ids(page) == [5, 4, 3]
    assert page["total"] == 3
    assert store.insert(entry()).id == 6  # ids are never reused
    store.close()


def test_insert_id_stores_the_row_and_shares_the_id_sequence_with_insert() -> None:
    store = ActivityStore(max_rows=10)
    assert store.insert_id(entry(inputs=7)) == 1
    assert store.insert(entry(inputs=8)).id == 2
    assert store.insert_id(entry(inputs=9)) == 3
    page = store.page(ActivityQuery())
    assert ids(page) == [3, 2, 1]
    assert [row["tokens"]["input_tokens"] for row in page["data"]] == [9, 8, 7]
    store.close()


def test_unread_rows_stay_bounded_and_a_reader_sees_the_newest_max_rows() -> None:
    # Nothing reads: rows are queued, never written, and the queue keeps at most what the
    # next prune would keep (plus one batch) however many requests pass.
    store = ActivityStore(max_rows=3)
    for n in range(1, 201):
        store.insert(entry(inputs=n))
        assert len(store._pending) <= 3 + BATCH_ROWS
    page = store.page(ActivityQuery())
    assert ids(page) == [200, 199, 198]
    assert [row["tokens"]["input_tokens"] for row in page["data"]] == [200, 199, 198]
    assert page["total"] == 3
    for n in range(201, 206):  # reads and unread runs alternate: still the newest three
        store.insert(entry(inputs=n))
    assert ids(store.page(ActivityQuery())) == [205, 204, 203]
    store.close()


def test_without_pruning_every_unread_row_is_kept() -> None:
    store = ActivityStore(max_rows=0)
    for _ in range(3 * BATCH_ROWS + 5):
        store.insert(entry())
    assert len(store._pending) < BATCH_ROWS  # written in batches, not held in the queue
    assert store.page(ActivityQuery())["total"] == 3 * BATCH_ROWS + 5
    store.close()


def test_file_store_persists_across_reopen_in_wal_mode_without_pruning(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = ActivityStore(path, max_rows=2)
    for _ in range(4):
        store.insert(entry())
    store.close()
    reopened = ActivityStore(path, max_rows=2)
    assert ids(reopened.page(ActivityQuery())) == [4, 3, 2, 1]
    assert reopened.insert(entry()).id == 5
    reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_has_capture_is_asked_per_row(store: ActivityStore) -> None:
    for _ in range(3):
        store.insert(entry())
    page = store.page(ActivityQuery(), has_capture=lambda i: i == 2)
    assert [row["has_capture"] for row in page["data"]] == [False, True, False]


async def test_async_api_inline_and_on_the_store_thread(tmp_path: Path) -> None:
    for s in (ActivityStore(), ActivityStore(str(tmp_path / "a.db"))):
        first = await s.insert_async(entry("x"))
        assert first.id == 1
        page = await s.page_async(ActivityQuery(), has_capture=lambda _: True)
        assert page["data"][0]["has_capture"] is True
        assert (await s.stats_async(["x"]))["total_requests"] == 1
        s.close()
        s.close()  # idempotent


# ---- filters, sorting, paging ---------------------------------------------------------------


def test_filters_combine(store: ActivityStore) -> None:
    for i in range(10):
        store.insert(entry("a" if i % 2 else "b", T0 + i))
    assert ids(store.page(ActivityQuery(models=("a",), limit=100))) == [10, 8, 6, 4, 2]
    assert ids(store.page(ActivityQuery(models=("a", "b"), limit=3))) == [10, 9, 8]
    assert ids(store.page(ActivityQuery(start=T0 + 7, limit=100))) == [10, 9, 8]
    assert ids(store.page(ActivityQuery(end=T0 + 1, limit=100))) == [2, 1]
    assert ids(store.page(ActivityQuery(min_id=3, max_id=5))) == [5, 4, 3]
    combined = ActivityQuery(models=("b",), start=T0 + 2, end=T0 + 8, max_id=7, order="asc")
    assert ids(store.page(combined)) == [3, 5, 7]


def test_paging_counts_total_and_pages(store: ActivityStore) -> None:
    for _ in range(7):
        store.insert(entry())
    page = store.page(ActivityQuery(limit=3, page=3))
    assert (ids(page), page["page"], page["limit"], page["total"], page["total_pages"]) == (
        [1],
        3,
        3,
        7,
        3,
    )
    beyond = store.page(ActivityQuery(limit=3, page=9))
    assert (beyond["data"], beyond["total"]) == ([], 7)
    empty = ActivityStore()
    assert empty.page(ActivityQuery()) == {
        "data": [],
        "page": 1,
        "limit": 25,
        "total": 0,
        "total_pages": 0,
    }
    empty.close()


def test_sort_by_column_with_id_as_tie_breaker(store: ActivityStore) -> None:
    store.insert(entry(duration=5))
    store.insert(entry(duration=9))
    store.insert(entry(duration=5))
    desc = ActivityQuery(sort="duration", order="desc")
    assert ids(store.page(desc)) == [2, 3, 1]
    asc = ActivityQuery(sort="duration", order="asc")
    assert ids(store.page(asc)) == [1, 3, 2]


@pytest.mark.parametrize("key", sorted(SORT_COLUMNS))
def test_every_sort_key_runs(store: ActivityStore, key: str) -> None:
    store.insert(entry("b", inputs=2))
    store.insert(entry("a", inputs=1))
    assert len(store.page(ActivityQuery(sort=key))["data"]) == 2


# ---- query parameter checks -----------------------------------------------------------------


def q(**params: str | list[str]) -> ActivityQuery:
    return parse_activity_query({k: v if isinstance(v, list) else [v] for k, v in params.items()})


def test_query_defaults() -> None:
    assert parse_activity_query({}) == ActivityQuery()
    assert q(limit="", page=" ", sort="") == ActivityQuery()


def test_query_values() -> None:
    got = q(
        model=["a", "b", "a", " "],
        start="2026-01-02T03:04:05Z",
        end="2026-01-02T05:04:05+02:00",
        min_id="2",
        max_id="9",
        limit="999",
        page="4",
        sort="gen_speed",
        order="ASC",
    )
    assert got == ActivityQuery(("a", "b"), T0, T0, 2, 9, 999, 4, "gen_speed", "asc")
    assert q(start="2026-01-02T03:04:05.250z").start == pytest.approx(T0 + 0.25)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be between 1 and 999"),
        ({"limit": "1000"}, "limit must be between 1 and 999"),
        ({"limit": "ten"}, "limit must be between 1 and 999"),
        ({"page": "0"}, "page must be >= 1"),
        ({"page": "x"}, "page must be >= 1"),
        ({"sort": "nope"}, "invalid sort column"),
        ({"sort": "ts"}, "invalid sort column"),
        ({"order": "up"}, "order must be asc or desc"),
        ({"start": "yesterday"}, "invalid 'start' timestamp, use RFC3339 format"),
        ({"end": "2026-01-02"}, "invalid 'end' timestamp, use RFC3339 format"),
        ({"end": "2026-01-02T03:04:05"}, "invalid 'end' timestamp, use RFC3339 format"),
        ({"start": "2026-13-02T03:04:05Z"}, "invalid 'start' timestamp, use RFC3339 format"),
        (
            {"start": "2026-01-02T03:04:06Z", "end": "2026-01-02T03:04:05Z"},
            "start must be before end",
        ),
        ({"min_id": "5", "max_id": "4"}, "min_id must be <= max_id"),
        ({"min_id": "-1"}, "invalid 'min_id' value, use a positive integer"),
        ({"max_id": "x"}, "invalid 'max_id' value, use a positive integer"),
    ],
)
def test_query_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        q(**params)
    assert info.value.message == message
    assert info.value.status == 400


# ---- stats ----------------------------------------------------------------------------------


def test_stats_totals_and_histograms(store: ActivityStore) -> None:
    store.insert(entry("a", inputs=10, outputs=5, cached=4, prompt_speed=100, gen_speed=10))
    store.insert(entry("a", inputs=20, outputs=7, cached=-1, prompt_speed=-1, gen_speed=30))
    store.insert(entry("b", inputs=1, outputs=1, cached=2))
    stats = store.stats()
    assert {k: stats[k] for k in stats if k.startswith("total")} == {
        "total_requests": 3,
        "total_input_tokens": 31,
        "total_output_tokens": 13,
        "total_cache_tokens": 6,  # -1 (unknown) counts as nothing
    }
    assert stats["prompt_histogram"] == {
        "bins": [1],
        "min": 100.0,
        "max": 100.0,
        "binSize": 0.0,
        "p50": 100.0,
        "p95": 100.0,
        "p99": 100.0,
    }
    gen = stats["gen_histogram"]
    assert (gen["min"], gen["max"], sum(gen["bins"]), len(gen["bins"])) == (10.0, 30.0, 2, 5)
    only_b = store.stats(["b"])
    assert only_b["total_requests"] == 1
    assert only_b["prompt_histogram"] is None
    assert only_b["gen_histogram"] is None


def test_histogram_sturges_bins_and_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 100 values: ceil(log2 100) + 1 = 8 bins
    h = histogram(values)
    assert h is not None
    assert len(h["bins"]) == 8
    assert sum(h["bins"]) == 100
    assert h["binSize"] == pytest.approx(99 / 8)
    assert h["bins"][-1] >= 1  # the maximum lands in the last bin
    assert (h["p50"], h["p95"], h["p99"]) == pytest.approx((50.5, 95.05, 99.01))
    assert len(histogram([1.0, 2.0])["bins"]) == 5  # type: ignore[index]
    many = histogram([float(v) for v in range(10**6 // 1000 * 1000)])
    assert many is not None
    assert len(many["bins"]) == 20
    assert histogram([]) is None


def test_percentile_edges() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 3.0], 50) == 2.0


# ---- reuse across reloads -------------------------------------------------------------------


def test_reuse_or_open_keeps_the_store_when_the_path_is_unchanged(tmp_path: Path) -> None:
    old = ActivityStore(None, max_rows=10)
    old.insert(entry())
    same = reuse_or_open(old, None, 5)
    assert same is old
    assert same.max_rows == 5
    assert same.insert(entry()).id == 2
    path = str(tmp_path / "a.db")
    moved = reuse_or_open(old, path, 5)
    assert moved is not old
    assert moved.path == path
    assert reuse_or_open(moved, f" {path} ", 7) is moved
    assert reuse_or_open(None, None, 5).in_memory
    old.close()
    moved.close()
