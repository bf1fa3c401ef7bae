"""The Activity page's completed requests (`/api/metrics/activity`): a row appears when a
request is recorded, paging, sorting and the model filter; the token and speed statistics
(`/api/metrics/stats`); the capture viewer (`/api/captures/<id>`). One test: a llamaswap
and its models start once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_pages import TWO_MODELS, close, expect, open_page, shoot
from llamaswap_proc import LlamaswapProcess, chat_body, llamaswap

pytestmark = pytest.mark.ui


def activity_ids(server: LlamaswapProcess, query: str) -> list[int]:
    doc = server.call("GET", f"/api/metrics/activity?{query}").json()
    return [row["id"] for row in doc["data"]]


def test_ui_activity_history_pages_sorts_filters(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, "captureBuffer: 5\n" + TWO_MODELS) as server:
        page = open_page(browser, server, "activity")
        rows = page.locator("#history-rows tr")
        pager = page.locator("#history-page")
        try:
            expect(page.locator("#history-empty")).to_have_text("No completed requests yet.")
            assert server.chat("alpha").status == 200
            expect(rows).to_have_count(1)  # refreshed by the `activity` event
            expect(rows.first).to_have_attribute("data-model", "alpha")
            expect(rows.first).to_contain_text("/v1/chat/completions")
            expect(rows.first).to_contain_text("200")
            expect(page.locator("#stat-requests")).to_have_text("1")

            for _ in range(10):
                assert server.chat("alpha").status == 200
            streamed = server.call("POST", "/v1/chat/completions", chat_body("beta", stream=True))
            assert streamed.status == 200
            expect(pager).to_have_attribute("data-total", "12")
            expect(page.locator("#stat-requests")).to_have_text("12")
            expect(page.locator("#hist-gen")).not_to_have_attribute("data-count", "0")
            expect(page.locator("#hist-gen [data-p=p50]")).to_contain_text("p50")

            page.locator("#history-limit").select_option("10")
            expect(rows).to_have_count(10)
            expect(pager).to_contain_text("page 1 of 2")
            newest = activity_ids(server, "sort=id&order=desc&limit=12")
            expect(rows.first).to_have_attribute("data-id", str(newest[0]))
            expect(rows.first).to_have_attribute("data-model", "beta")
            page.locator("#history-next").click()
            expect(pager).to_contain_text("page 2 of 2")
            expect(rows).to_have_count(2)
            expect(rows.last).to_have_attribute("data-id", str(newest[-1]))
            page.locator("#history-prev").click()
            expect(pager).to_contain_text("page 1 of 2")

            page.locator('button[data-sort="id"]').click()
            expect(page.locator('th:has(button[data-sort="id"])')).to_have_attribute(
                "aria-sort", "ascending"
            )
            expect(rows.first).to_have_attribute("data-id", str(newest[-1]))
            page.locator('button[data-sort="model"]').click()
            expect(rows.first).to_have_attribute("data-model", "alpha")
            page.locator('button[data-sort="model"]').click()  # descending
            expect(rows.first).to_have_attribute("data-model", "beta")

            page.locator("#history-model").select_option("beta")
            expect(rows).to_have_count(1)
            expect(page.locator("#stat-requests")).to_have_text("1")
            expect(pager).to_contain_text("page 1 of 1")
            page.locator("#history-model").select_option("")
            expect(pager).to_have_attribute("data-total", "12")
            shoot(page, tmp_path, "activity", full_page=True)

            # the capture viewer: the request body pretty-printed, the streamed answer as text
            row = rows.filter(has=page.locator("button[data-capture]")).first
            row.locator("button[data-capture]").click()
            dialog = page.locator("#capture-dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_have_attribute("data-id", row.get_attribute("data-id") or "")
            req = dialog.locator("#capture-req-body")
            expect(req).to_have_attribute("data-kind", "json")
            expect(req).to_contain_text('"messages": [')
            expect(req).to_contain_text('"model": "beta"')
            resp = dialog.locator("#capture-resp-body")  # the event stream, as text
            expect(resp).to_have_attribute("data-kind", "text")
            expect(resp).to_contain_text('data: {"')
            expect(resp).to_contain_text('"choices"')
            expect(dialog).to_contain_text("/v1/chat/completions")
            shoot(page, tmp_path, "activity-capture")
            dialog.locator("#capture-close").click()
            expect(dialog).to_be_hidden()
        finally:
            close(page)
