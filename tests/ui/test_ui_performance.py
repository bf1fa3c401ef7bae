"""The Performance page: the host summary from `/api/hardware` (copyable as JSON) and live
charts from `/api/performance`, fetched again with `?after=` for the new samples only; the
disabled notice when `performance.disabled` is set."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from browser_pages import PHONE, TWO_MODELS, close, expect, open_page, shoot
from llamaswap_proc import llamaswap

pytestmark = pytest.mark.ui

# The page polls every 5 s; the test has it poll every 200 ms (the sampler's own interval,
# at least 5 s, still paces the samples: the first comes 1 s after startup).
FAST_POLL = "window.llamaswapPerformancePollMs = 200;"


def test_ui_performance_shows_hardware_and_live_charts(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, TWO_MODELS) as server:
        context = browser.new_context(
            viewport={"width": 1280, "height": 800},
            color_scheme="light",
            permissions=["clipboard-read", "clipboard-write"],
        )
        context.add_init_script(FAST_POLL)
        context.set_default_timeout(15_000)
        page = context.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(f"{server.base}/ui/#/performance")
        try:
            expect(page.locator('nav a[data-route="performance"]')).to_have_class("active")
            expect(page.locator("#hw-hostname")).to_have_text(socket.gethostname())
            expect(page.locator("#hw-memory")).to_contain_text("iB")
            page.locator("#hardware-copy").click()
            expect(page.locator("#hardware-copy")).to_have_text("Copied")
            copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
            assert copied["hostname"] == socket.gethostname()
            assert copied["schema_version"] == 1

            # the first sample: a CPU chart with one point, the rest waits for a second one
            cpu = page.locator("#chart-cpu")
            expect(cpu).to_have_attribute("data-points", re.compile(r"^[1-9]"))
            expect(cpu.locator("svg .series circle")).to_have_count(1)
            expect(page.locator("#chart-memory .perf-value")).to_contain_text(" / ")
            expect(page.locator("#chart-load .series")).to_have_count(3)
            expect(page.locator("#perf-status")).to_be_hidden()

            # later polls ask only for what is new, and the new sample is appended
            expect(cpu).to_have_attribute("data-points", "2", timeout=10_000)
            after = [u for u in urls if "/api/performance?after=" in u]
            assert after, urls
            expect(page.locator("#chart-network")).to_have_attribute("data-points", "1")
            expect(page.locator("#chart-network .perf-value")).to_contain_text("/s")
            shoot(page, tmp_path, "performance", full_page=True)

            page.set_viewport_size(PHONE)
            expect(page.locator("#chart-cpu svg")).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], width
        finally:
            close(page)


def test_ui_performance_disabled(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, "performance:\n  disabled: true\n" + TWO_MODELS) as server:
        page = open_page(browser, server, "performance")
        try:
            expect(page.locator("#perf-status")).to_have_text(
                "Performance monitoring is disabled (performance.disabled)."
            )
            expect(page.locator("#perf-status")).to_have_attribute("data-state", "disabled")
            expect(page.locator("#perf-charts .perf-chart")).to_have_count(0)
            # the host summary does not depend on the sampler
            expect(page.locator("#hw-hostname")).to_have_text(socket.gethostname())
        finally:
            close(page)
