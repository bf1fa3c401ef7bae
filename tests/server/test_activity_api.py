"""Recorded requests over real HTTP: activity rows, captures, events, token counters and the
`/api/metrics/activity`, `/api/metrics/stats`, `/api/captures/<id>` routes (spec §6.1, §6.2)."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.config.load import load_config_text
from llamaswap.observe.activity import ActivityQuery
from llamaswap.observe.events import EventBus
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.router import Router
from llamaswap.server import app as app_module
from llamaswap.server.auth import ApiKeyChecker
from llamaswap.server.model_paths import RECORDED_PATHS
from llamaswap.server.state import AppState

DEADLINE = 10.0
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def rows(session: aiohttp.ClientSession, base: str, query: str = "") -> dict[str, Any]:
    async with session.get(f"{base}/api/metrics/activity{query}") as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


async def get_capture(session: aiohttp.ClientSession, base: str, cid: int | str) -> Any:
    async with session.get(f"{base}/api/captures/{cid}") as resp:
        return resp.status, await resp.json()


def b64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def total_rows(state: AppState) -> int:
    return int(state.activity.page(ActivityQuery())["total"])


# ---- rows and captures ----------------------------------------------------------------------


async def test_chat_request_is_recorded_with_tokens_capture_and_metadata() -> None:
    config = "captureBuffer: 1\n" + fake_models_yaml(["m"])
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer secret", "X-Session-ID": "s1"}
        async with session.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers) as r:
            assert r.status == 200
            answer = await r.json()
        page = await rows(session, base)
        assert (page["total"], page["total_pages"], page["page"], page["limit"]) == (1, 1, 1, 25)
        row = page["data"][0]
        assert row["id"] == 1
        assert row["model"] == "m"
        assert row["req_path"] == "/v1/chat/completions"
        assert row["resp_status_code"] == 200
        assert row["resp_content_type"].startswith("application/json")
        # the fake's llama.cpp timings win over its usage: 25 in, 10 out, 10 tok/s
        assert row["tokens"] == {
            "cache_tokens": -1,
            "draft_tokens": -1,
            "draft_acc_tokens": -1,
            "input_tokens": 25,
            "output_tokens": 10,
            "prompt_per_second": 0.0,
            "tokens_per_second": 10.0,
        }
        assert row["duration_ms"] >= 30  # prompt_ms + predicted_ms
        assert row["has_capture"] is True
        assert row["metadata"] == {"fifo_priority": "0"}
        assert "error_msg" not in row
        assert row["timestamp"].endswith("Z")

        status, capture = await get_capture(session, base, 1)
        assert status == 200
        assert capture["id"] == 1
        assert capture["req_path"] == "/v1/chat/completions"
        assert json.loads(b64(capture["req_body"]) or b"") == CHAT
        assert capture["req_headers"]["Authorization"] == "[REDACTED]"
        assert capture["req_headers"]["X-Session-ID"] == "s1"
        assert json.loads(b64(capture["resp_body"]) or b"") == answer
        assert capture["resp_headers"]["Content-Type"].startswith("application/json")


async def test_streamed_answer_is_recorded_after_its_last_byte_and_not_held_back() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        body = {**CHAT, "stream": True}
        url = f"{base}/v1/chat/completions?chunks=3&chunk_delay=400"
        async with session.post(url, json=body) as resp:
            first = await resp.content.readuntil(b"\n\n")
            # The first event arrived while the upstream still streams: nothing recorded yet.
            assert b"asdf" in first
            assert total_rows(state) == 0
            rest = await resp.read()
        assert b"[DONE]" in rest
        page = await rows(session, base)
        row = page["data"][0]
        assert row["resp_content_type"] == "text/event-stream"
        assert (row["tokens"]["input_tokens"], row["tokens"]["output_tokens"]) == (25, 10)
        assert row["duration_ms"] >= 800  # wall clock of the whole stream


async def test_upstream_error_is_recorded_with_its_message_and_a_request_only_capture() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/v1/chat/completions?fail=503", json=CHAT) as resp:
            assert resp.status == 503
        row = (await rows(session, base))["data"][0]
        assert row["resp_status_code"] == 503
        assert row["error_msg"] == "fake failure 503"
        assert row["tokens"]["input_tokens"] == 0
        status, capture = await get_capture(session, base, row["id"])
        assert status == 200
        assert json.loads(b64(capture["req_body"]) or b"") == CHAT
        assert capture["resp_body"] is None
        assert capture["resp_headers"] is None


async def test_compressed_answers_are_decoded_and_accept_encoding_is_reduced() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        headers = {"Accept-Encoding": "br, gzip;q=0.8, zstd"}
        for stream in (False, True):
            url = f"{base}/v1/chat/completions?compress=1&chunks=2"
            async with session.post(url, json={**CHAT, "stream": stream}, headers=headers) as r:
                assert r.status == 200
                assert r.headers["Content-Encoding"] == "gzip"  # passed through untouched
                assert r.headers["X-Fake-Accept-Encoding"] == "gzip;q=0.8"
                await r.read()
        page = await rows(session, base, "?order=asc")
        assert [row["tokens"]["input_tokens"] for row in page["data"]] == [25, 25]
        assert all("error_msg" not in row for row in page["data"])
        status, capture = await get_capture(session, base, 1)
        assert status == 200
        assert "Content-Encoding" not in capture["resp_headers"]
        assert json.loads(b64(capture["resp_body"]) or b"")["usage"]["prompt_tokens"] == 25


async def test_only_model_route_posts_are_recorded_including_upstream_remainders() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/upstream/m/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        async with session.get(f"{base}/upstream/m/test") as r:
            assert r.status == 200
        async with session.post(f"{base}/upstream/m/test") as r:
            assert r.status == 200
        async with session.get(f"{base}/v1/audio/voices?model=m") as r:
            assert r.status == 200
        async with session.post(f"{base}/v/chat/completions", json=CHAT) as r:
            assert r.status == 200
        page = await rows(session, base, "?order=asc")
        assert [row["req_path"] for row in page["data"]] == [
            "/upstream/m/v1/chat/completions",
            "/v/chat/completions",
        ]


def test_recorded_paths_are_the_apps_model_post_routes() -> None:
    config = load_config_text(fake_models_yaml(["m"]))
    router = Router(config, events=EventBus(), upstream_log=LogBuffer())
    app = app_module.build_app(AppState(config, router, ApiKeyChecker([])))
    posted = {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "POST"
        and route.handler is app_module.model_route
        and route.resource is not None
    }
    assert posted == RECORDED_PATHS


async def test_failed_start_is_recorded_as_our_error() -> None:
    config = (
        "healthCheckTimeout: 15\nmodels:\n  broken:\n"
        f"    cmd: {sys.executable} -c 'import sys; sys.exit(3)' ${{PORT}}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/v1/chat/completions", json={"model": "broken", "messages": []}
        ) as resp:
            assert resp.status >= 500
            message = (await resp.json())["error"]["message"]
        row = (await rows(session, base))["data"][0]
        assert row["resp_status_code"] == resp.status
        assert row["error_msg"] == message
        assert "metadata" not in row  # never granted: no fifo_priority


async def test_client_leaving_mid_stream_still_records_a_row() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        url = f"{base}/v1/chat/completions?chunks=50&chunk_delay=200"
        async with session.post(url, json={**CHAT, "stream": True}) as resp:
            await resp.content.readuntil(b"\n\n")
            resp.close()
        await wait_until(lambda: total_rows(state) == 1, DEADLINE, message="a row")
        row = (await rows(session, base))["data"][0]
        assert row["resp_status_code"] == 499  # the client closed the request
        assert row["resp_content_type"] == "text/event-stream"
        assert row["tokens"]["output_tokens"] == 0  # the usage event never came


async def test_fifo_priority_metadata_comes_from_the_routing_config() -> None:
    config = (
        fake_models_yaml(["m"])
        + "routing:\n  scheduler:\n    settings:\n      fifo:\n        priority:\n          m: 7\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        assert (await rows(session, base))["data"][0]["metadata"] == {"fifo_priority": "7"}


# ---- captures off, eviction, ids ------------------------------------------------------------


async def test_capture_buffer_zero_disables_captures() -> None:
    config = "captureBuffer: 0\n" + fake_models_yaml(["m"])
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        assert (await rows(session, base))["data"][0]["has_capture"] is False
        status, body = await get_capture(session, base, 1)
        assert status == 404
        assert body["error"]["message"] == "capture not found"


async def test_capture_route_errors() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        status, body = await get_capture(session, base, "abc")
        assert (status, body["error"]["message"]) == (400, "invalid capture ID")
        assert body["error"]["type"] == "invalid_request_error"
        status, body = await get_capture(session, base, 99)
        assert (status, body["error"]["code"]) == (404, "not_found")
        async with session.get(f"{base}/api/captures/x", headers={"Accept": "text/plain"}) as resp:
            assert await resp.text() == "llama-swap: invalid capture ID"


async def test_has_capture_follows_the_live_buffer() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        for _ in range(2):
            async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
        # shrink the buffer so only the newest capture still fits
        newest = state.captures.get(2)
        assert newest is not None
        state.captures.resize(newest.size())
        page = await rows(session, base, "?order=asc")
        assert [row["has_capture"] for row in page["data"]] == [False, True]


# ---- query parameters -----------------------------------------------------------------------


async def test_activity_filters_sorting_and_paging_over_http() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a", "b"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        for model in ("a", "b", "a"):
            body = {"model": model, "messages": []}
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                assert r.status == 200
        assert [r["id"] for r in (await rows(session, base, "?model=a"))["data"]] == [3, 1]
        both = await rows(session, base, "?model=a&model=b&limit=2&page=2&order=asc")
        assert ([r["id"] for r in both["data"]], both["total"], both["total_pages"]) == ([3], 3, 2)
        ids = await rows(session, base, "?min_id=2&max_id=3&sort=model&order=desc")
        assert [r["id"] for r in ids["data"]] == [2, 3]
        window = await rows(session, base, "?start=2000-01-01T00:00:00Z&end=2000-01-02T00:00:00Z")
        assert window["total"] == 0


async def test_activity_parameter_errors_use_the_error_envelope() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        cases = {
            "?limit=0": "limit must be between 1 and 999",
            "?page=0": "page must be >= 1",
            "?sort=bogus": "invalid sort column",
            "?order=sideways": "order must be asc or desc",
            "?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z": "start must be before end",
            "?min_id=9&max_id=2": "min_id must be <= max_id",
            "?start=today": "invalid 'start' timestamp, use RFC3339 format",
        }
        for query, message in cases.items():
            async with session.get(f"{base}/api/metrics/activity{query}") as resp:
                assert resp.status == 400, query
                body = await resp.json()
                assert body["error"]["message"] == message
                assert body["src"] == "llama-swap"


async def test_stats_over_http() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a", "b"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        for model in ("a", "a", "b"):
            body = {"model": model, "messages": []}
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                assert r.status == 200
        async with session.get(f"{base}/api/metrics/stats") as resp:
            stats = await resp.json()
        assert stats["total_requests"] == 3
        assert (stats["total_input_tokens"], stats["total_output_tokens"]) == (75, 30)
        assert stats["total_cache_tokens"] == 0
        assert stats["prompt_histogram"] is None  # the fake reports no prompt speed
        assert stats["gen_histogram"]["bins"] == [3]
        assert stats["gen_histogram"]["p50"] == 10.0
        async with session.get(f"{base}/api/metrics/stats?model=b") as resp:
            assert (await resp.json())["total_requests"] == 1


async def test_activity_routes_need_the_api_key() -> None:
    config = 'apiKeys: ["sk-one"]\n' + fake_models_yaml(["m"])
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        for path in ("/api/metrics/activity", "/api/metrics/stats", "/api/captures/1"):
            async with session.get(f"{base}{path}") as resp:
                assert resp.status == 401, path
        auth = {"Authorization": "Bearer sk-one"}
        async with session.get(f"{base}/api/metrics/activity", headers=auth) as resp:
            assert resp.status == 200


# ---- events and Prometheus ------------------------------------------------------------------


async def next_frame(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    frame = await resp.content.readuntil(b"\n\n")
    outer = json.loads(frame.decode().split("data:", 1)[1])
    return outer["type"], json.loads(outer["data"])


async def test_events_send_ui_config_first_then_activity_ids() -> None:
    config = "ui:\n  activity:\n    session_id: [X-Conv, x-conv, ' X-Trace ']\n"
    async with (
        running_llamaswap(config + fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/events") as events,
    ):
        async with asyncio.timeout(DEADLINE):
            kind, payload = await next_frame(events)
            while kind != "uiConfig":
                kind, payload = await next_frame(events)
            assert payload == {"activity": {"session_id": ["X-Conv", "X-Trace"]}}
            async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
            while kind != "activity":
                kind, payload = await next_frame(events)
            assert payload == {"id": 1}


async def test_token_counters_per_model_in_prometheus() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        for _ in range(2):
            async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
        samples = {
            (s.name, s.labels.get("model"), s.labels.get("direction")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("llamaswap_tokens_total", "m", "in")] == 50
        assert samples[("llamaswap_tokens_total", "m", "out")] == 20


async def test_a_burst_of_exchanges_ending_together_keeps_every_row_token_and_capture() -> None:
    # Exchanges that end in one pass of the loop are recorded together: none may be lost,
    # merged or given another's tokens or capture.
    burst = 24
    config = "captureBuffer: 5\n" + fake_models_yaml(["m"])
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:

        async def one(n: int) -> int:
            body = {**CHAT, "messages": [{"role": "user", "content": f"burst {n}"}]}
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                await r.read()
                return r.status

        assert await asyncio.gather(*(one(n) for n in range(burst))) == [200] * burst
        page = await rows(session, base, "?limit=100")
        assert page["total"] == burst
        assert sorted(row["id"] for row in page["data"]) == list(range(1, burst + 1))
        assert {row["tokens"]["input_tokens"] for row in page["data"]} == {25}
        sent = set()
        for row in page["data"]:
            status, capture = await get_capture(session, base, row["id"])
            assert status == 200
            sent.add(json.loads(b64(capture["req_body"]) or b"")["messages"][0]["content"])
        assert sent == {f"burst {n}" for n in range(burst)}
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
        tokens = {
            s.labels.get("direction"): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "llamaswap_tokens_total"
        }
        assert tokens == {"in": 25 * burst, "out": 10 * burst}


# ---- file store and reloads -----------------------------------------------------------------


async def test_file_store_keeps_rows_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "activity.db"
    config = f"store:\n  path: {path}\n" + fake_models_yaml(["m"])
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        assert (await rows(session, base))["total"] == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT model_id, input_tokens FROM activity").fetchall() == [("m", 25)]


async def test_reconfigure_keeps_the_store_unless_its_path_changes(tmp_path: Path) -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        before = state.activity
        state.reconfigure_observe(load_config_text("metricsMaxInMemory: 5\ncaptureBuffer: 0\n"))
        assert state.activity is before
        assert state.activity.max_rows == 5
        assert not state.captures.enabled
        assert total_rows(state) == 1
        state.reconfigure_observe(load_config_text(""))  # captures on again, 5 MiB
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        assert 2 in state.captures
        moved = f"store:\n  path: {tmp_path / 'a.db'}\n"
        state.reconfigure_observe(load_config_text(moved))
        assert state.activity is not before
        assert total_rows(state) == 0
        assert len(state.captures) == 0  # keyed by the old store's ids


async def test_accept_encoding_is_only_reduced_for_recorded_requests() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, _),
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        only_br = {"Accept-Encoding": "br"}
        url = f"{base}/v1/chat/completions?compress=1"
        async with session.post(url, json=CHAT, headers=only_br) as r:
            assert r.headers["X-Fake-Accept-Encoding"] == ""  # nothing decodable was left
            assert "Content-Encoding" not in r.headers
            await r.read()
        mixed = {"Accept-Encoding": "br, gzip"}
        async with session.get(f"{base}/upstream/m/test?compress=1", headers=mixed) as r:
            assert r.headers["X-Fake-Accept-Encoding"] == "br, gzip"  # not recorded: untouched
            await r.read()


async def test_answer_behind_a_loading_stream_is_recorded() -> None:
    config = fake_models_yaml(["m"], extra="sendLoadingState: true")
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        body = {**CHAT, "stream": True}
        async with session.post(f"{base}/v1/chat/completions?chunks=2", json=body) as r:
            text = await r.text()
        assert "loading model" in text  # the model was started behind a loading stream
        row = (await rows(session, base))["data"][0]
        assert row["resp_status_code"] == 200
        assert row["resp_content_type"] == "text/event-stream"
        assert (row["tokens"]["input_tokens"], row["tokens"]["output_tokens"]) == (25, 10)
