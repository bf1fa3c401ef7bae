"""The web UI in a real browser (Playwright + Debian's chromium) against a real llamaswap:
the Models, Playground, Timeline, Logs and in-flight Activity pages and the key prompt.

Skipped only when `/usr/bin/chromium` or the `playwright` module is missing (see
`browser_pages`).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from browser_pages import (
    ANSWER,
    PHONE,
    TWO_MODELS,
    Page,
    close,
    expect,
    loud_model,
    open_page,
    shoot,
)
from llamaswap_proc import LlamaswapProcess, Reply, chat_body, llamaswap

pytestmark = pytest.mark.ui

UI_DIR = Path(__file__).resolve().parents[2] / "src" / "llamaswap" / "ui"


def test_ui_models_page_lists_models_and_loads_one(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, TWO_MODELS) as server:
        page = open_page(browser, server, "models")
        try:
            alpha = page.locator('[data-model="alpha"]')
            beta = page.locator('[data-model="beta"]')
            expect(alpha).to_be_visible()
            expect(beta).to_be_visible()
            expect(alpha).to_contain_text("the first fake model")
            expect(alpha).to_contain_text("first")
            expect(alpha).to_have_attribute("data-state", "stopped")
            alpha.get_by_role("button", name="Load", exact=True).click()
            expect(alpha).to_have_attribute("data-state", "ready")
            expect(alpha.locator(".dot")).to_have_class("dot ready")
            assert server.running_models() == ["alpha"]
            alpha.get_by_role("button", name="Logs").click()
            expect(alpha.locator("pre.log")).to_be_visible()
            page.set_viewport_size(PHONE)
            expect(alpha.get_by_role("button", name="Unload", exact=True)).to_be_in_viewport()
            alpha.get_by_role("button", name="Unload", exact=True).click()
            expect(alpha).to_have_attribute("data-state", "stopped")
        finally:
            close(page)


def test_ui_playground_streams_answer_and_reasoning(browser: Any, tmp_path: Path) -> None:
    config = "sendLoadingState: true\n" + TWO_MODELS
    with llamaswap(tmp_path, config) as server:
        page = open_page(browser, server, "playground")
        try:
            expect(page.locator("#pg-model option")).to_have_count(2)
            page.locator("#pg-model").select_option("beta")
            page.locator("#pg-input").fill("Hello there")
            page.locator("#pg-send").click()
            answer = page.locator('.msg[data-role="assistant"]').last
            expect(answer.locator(".content")).to_have_text(ANSWER)
            expect(answer).to_have_attribute("data-done", "true")
            # the loading progress arrives as reasoning_content: shown apart from the answer
            expect(answer.locator("details.reasoning")).to_be_visible()
            expect(answer.locator(".reasoning-text")).not_to_be_empty()
            expect(page.locator('.msg[data-role="user"] .content')).to_have_text("Hello there")
            shoot(page, tmp_path, "playground")
        finally:
            close(page)


def test_ui_timeline_shows_swap(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, TWO_MODELS) as server:
        page = open_page(browser, server, "timeline", color_scheme="dark")
        try:
            expect(page.locator('svg.timeline g.lane[data-model="alpha"]')).to_be_attached()
            assert server.chat("alpha").status == 200
            expect(page.locator('g.lane[data-model="alpha"] rect.seg-ready')).to_be_attached()
            assert server.chat("beta").status == 200
            expect(page.locator('#swap-list li[data-target="beta"]')).to_contain_text("beta")
            expect(page.locator('svg.timeline g.swap[data-target="beta"]')).to_be_attached()
            expect(page.locator('g.lane[data-model="beta"] rect.seg-ready')).to_be_attached()
            expect(page.locator('#swap-list li[data-target="beta"]')).to_contain_text("alpha")
            page.locator("#timeline-window").select_option("1 min")
            shoot(page, tmp_path, "timeline")
        finally:
            close(page)


def test_ui_logs_page_shows_proxy_upstream_and_model_streams(browser: Any, tmp_path: Path) -> None:
    """Proxy and upstream lines arrive live and filter; the Model panel streams
    `/logs/stream/<id>` of the picked model: its request lines show, the other's do not."""
    config = "models:\n" + loud_model("alpha") + loud_model("beta")
    with llamaswap(tmp_path, config) as server:
        page = open_page(browser, server, "logs")
        try:
            expect(page.locator("#log-proxy")).to_be_visible()
            assert server.chat("alpha").status == 200
            expect(page.locator("#log-upstream")).to_contain_text("My PID")
            expect(page.locator("#log-proxy")).to_contain_text("swap to alpha")
            page.locator("#log-filter").fill("swap to")
            expect(page.locator("#log-upstream .line")).to_have_count(0)
            expect(page.locator("#log-proxy .line")).to_contain_text(["swap to alpha"])
            page.locator("#log-filter").fill("")
            expect(page.locator("#log-upstream")).to_contain_text("My PID")

            assert server.call("GET", "/upstream/alpha/alpha-marker").status == 200
            assert server.call("GET", "/upstream/beta/beta-marker").status == 200
            expect(page.locator("#log-upstream")).to_contain_text("GET /beta-marker 200")
            picker = page.locator("#log-model-select")
            expect(picker.locator("option")).to_have_count(3)  # "choose", alpha, beta
            picker.select_option("beta")
            model_log = page.locator("#log-model")
            expect(model_log).to_have_attribute("data-log", "beta")
            expect(model_log).to_contain_text("GET /beta-marker 200")
            expect(model_log).not_to_contain_text("alpha-marker")
            picker.select_option("alpha")
            expect(model_log).to_contain_text("GET /alpha-marker 200")
            expect(model_log).not_to_contain_text("beta-marker")
            assert server.call("GET", "/upstream/alpha/live-line").status == 200
            expect(model_log).to_contain_text("GET /live-line 200")  # followed live
            shoot(page, tmp_path, "logs")
        finally:
            close(page)


def test_ui_asks_for_api_key_then_works(browser: Any, tmp_path: Path) -> None:
    """With `apiKeys`, the page loads (its files are public), API calls answer 401 until
    the key typed into the prompt is sent, and the browser never shows a Basic dialog."""
    config = "apiKeys: [sekrit]\n" + TWO_MODELS
    with llamaswap(tmp_path, config) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        page: Page = context.new_page()
        try:
            page.goto(f"{server.base}/ui/#/models")
            dialog = page.locator("#key-dialog")
            expect(dialog).to_be_visible()
            icon = server.call("GET", "/favicon.ico")  # public, like the page's own files
            assert (icon.status, icon.headers["Content-Type"]) == (200, "image/x-icon")
            assert icon.body == (UI_DIR / "favicon.ico").read_bytes()
            assert server.call("GET", "/running").status == 401
            page.locator("#key-input").fill("wrong")
            page.locator("#key-save").click()
            expect(page.locator("#key-error")).to_be_visible()
            page.locator("#key-input").fill("sekrit")
            shoot(page, tmp_path, "api-key")
            page.locator("#key-save").click()
            expect(dialog).to_be_hidden()
            alpha = page.locator('[data-model="alpha"]')
            expect(alpha).to_be_visible()
            assert page.evaluate("localStorage.getItem('llamaswap.apiKey')") == "sekrit"
            alpha.get_by_role("button", name="Load", exact=True).click()
            expect(alpha).to_have_attribute("data-state", "ready")
        finally:
            context.close()


class Background:
    """One blocking request on a thread: its reply or error, and how long it took."""

    def __init__(
        self,
        server: LlamaswapProcess,
        model: str,
        wait: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        path = "/v1/chat/completions" + (f"?wait={wait}" if wait else "")
        self.reply: Reply | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(server, path, model, headers), daemon=True
        )
        self._thread.start()

    def _run(
        self, server: LlamaswapProcess, path: str, model: str, headers: dict[str, str] | None
    ) -> None:
        started = time.monotonic()
        try:
            self.reply = server.call("POST", path, chat_body(model), headers, timeout=60)
        except Exception as exc:  # the connection cut by a cancel lands here
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started

    def join(self, timeout: float = 15) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not end"


def inflight_ids(server: LlamaswapProcess) -> dict[str, str]:
    """model -> in-flight request id, from the API."""
    return {r["model"]: r["id"] for r in server.call("GET", "/api/inflight").json()["requests"]}


def cancel_all(server: LlamaswapProcess) -> None:
    """Cut whatever a failed test left in flight, so the server can stop promptly."""
    for request_id in inflight_ids(server).values():
        server.call("POST", f"/api/inflight/{request_id}/cancel")


def test_ui_activity_lists_and_cancels_inflight(browser: Any, tmp_path: Path) -> None:
    """A held request shows up live with a ticking elapsed time; Cancel cuts the client's
    connection and the row goes; the request queued behind it then gets served."""
    with llamaswap(tmp_path, TWO_MODELS) as server:
        page = open_page(browser, server, "activity")
        held: Background | None = None
        waiting: Background | None = None
        try:
            expect(page.locator("#inflight-empty")).to_have_text("No requests in flight.")
            held = Background(server, "alpha", wait="20s", headers={"X-Session-ID": "chat-42"})
            row = page.locator('#inflight-rows tr[data-model="alpha"]')
            expect(row).to_be_visible()
            expect(row.locator("td.session")).to_have_text("chat-42")  # ui.activity.session_id
            expect(row).to_contain_text("POST")
            expect(row).to_contain_text("/v1/chat/completions")
            expect(row).to_contain_text("127.0.0.1")
            expect(row.locator("td").first).to_have_text(inflight_ids(server)["alpha"])
            elapsed = row.locator("td.elapsed")
            expect(elapsed).to_have_text(re.compile(r"^\d+\.\d s$"))
            first = elapsed.inner_text()
            expect(elapsed).not_to_have_text(first)  # ticks in the browser
            # alpha holds its lease, so beta (same swap group) waits in the queue
            expect(page.locator("#inflight-count")).to_have_text("1 in flight")
            waiting = Background(server, "beta")
            expect(page.locator('#inflight-rows tr[data-model="beta"]')).to_be_visible()
            expect(page.locator("#activity-queue")).to_have_attribute("data-depth", "1")
            expect(page.locator("#inflight-count")).to_have_text("2 in flight")
            shoot(page, tmp_path, "activity-inflight")
            row.get_by_role("button", name="Cancel").click()
            expect(row).to_have_count(0)
            held.join()
            assert held.reply is None, f"the cancelled request was answered: {held.reply}"
            assert held.error is not None
            assert held.seconds < 15, held.seconds
            waiting.join()
            assert waiting.reply is not None and waiting.reply.status == 200, waiting.error
            expect(page.locator("#inflight-rows tr")).to_have_count(0)
            expect(page.locator("#inflight-empty")).to_be_visible()
            expect(page.locator("#activity-queue")).to_have_attribute("data-depth", "0")
        finally:
            close(page)
            cancel_all(server)


def test_ui_timeline_shows_queue_depth(browser: Any, tmp_path: Path) -> None:
    """While alpha holds its lease, a request for beta waits: the queue strip rises to 1
    and falls back to 0 once alpha's request is cancelled and beta is served."""
    with llamaswap(tmp_path, TWO_MODELS) as server:
        page = open_page(browser, server, "timeline")
        strip = page.locator("svg.timeline #queue-strip")
        held: Background | None = None
        waiting: Background | None = None
        try:
            expect(strip).to_have_attribute("data-max", "0")
            held = Background(server, "alpha", wait="20s")
            expect(page.locator('g.lane[data-model="alpha"] rect.seg-ready')).to_be_attached()
            # alpha's own wait for its start is over once it holds the lease
            expect(strip).to_have_attribute("data-depth", "0")
            waiting = Background(server, "beta")
            expect(strip).to_have_attribute("data-depth", "1")
            expect(strip).to_contain_text("queue 1")
            expect(strip.locator("path.queue-area")).to_be_attached()
            server.call("POST", f"/api/inflight/{inflight_ids(server)['alpha']}/cancel")
            waiting.join()
            assert waiting.reply is not None and waiting.reply.status == 200, waiting.error
            expect(strip).to_have_attribute("data-depth", "0")
            expect(strip).to_have_attribute("data-max", "1")  # the peak stays in the window
            held.join()
            assert held.error is not None
        finally:
            close(page)
            cancel_all(server)
