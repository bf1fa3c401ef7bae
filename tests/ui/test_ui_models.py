"""The Models page beyond local models: capabilities, peers, selectors (from `/v1/models`),
the active profile's pins and the profile switcher (`GET /api/profiles`,
`PUT /api/profiles/active`)."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from browser_pages import PHONE, close, expect, open_page, shoot
from llamaswap_proc import fake_model, llamaswap

pytestmark = pytest.mark.ui

RICH = (
    "models:\n"
    + fake_model(
        "alpha",
        "name: Alpha 7B",
        "description: the first fake model",
        "aliases: [a]",
        "capabilities:",
        "  in: [text, image]",
        "  out: [text]",
        "  tools: true",
        "  context: 8192",
    )
    + fake_model("beta", "description: the second fake model", "capabilities:", "  reranker: true")
    + "peers:\n"
    "  remote:\n"
    "    proxy: http://127.0.0.1:9\n"
    "    models: [big-model, small-model]\n"
    "selectors:\n"
    "  auto:\n"
    "    strategy: warm\n"
    "    targets: [alpha, beta]\n"
    "    description: whichever is warm\n"
    "profiles:\n"
    "  fast:\n"
    "    description: quick answers from alpha\n"
    "    pins:\n"
    "      quick: alpha\n"
    "      retired: ''\n"
    "  careful:\n"
    "    description: everything on beta\n"
    "    pins:\n"
    "      quick: beta\n"
)


def test_ui_models_page_shows_peers_selectors_and_switches_profiles(
    browser: Any, tmp_path: Path
) -> None:
    with llamaswap(tmp_path, RICH) as server:
        page = open_page(browser, server, "models")
        try:
            alpha = page.locator('[data-model="alpha"]')
            expect(alpha.locator(".caps")).to_contain_text("vision")
            expect(alpha.locator(".caps")).to_contain_text("tools")
            expect(alpha.locator(".caps")).to_contain_text("ctx 8192")
            expect(page.locator('[data-model="beta"] .caps')).to_have_text("reranker")
            peer = page.locator('[data-peer="remote"]')
            expect(peer.locator('[data-peer-model="remote/big-model"]')).to_be_visible()
            expect(peer.locator('[data-peer-model="remote/small-model"]')).to_be_visible()
            auto = page.locator('[data-selector="auto"]')
            expect(auto).to_contain_text("warm")
            expect(auto).to_contain_text("whichever is warm")
            expect(auto.locator('[data-target="beta"]')).to_be_visible()
            expect(auto).to_have_attribute("data-state", "stopped")

            select = page.locator("#profile-select")
            expect(page.locator("#profile-box")).to_be_visible()
            expect(select.locator("option")).to_have_count(3)  # none, careful, fast
            expect(select).to_have_value("")
            expect(page.locator("#pin-list")).to_be_hidden()
            select.select_option("fast")
            pin = page.locator('[data-pin="quick"]')
            expect(pin.locator('[data-target="alpha"]')).to_have_attribute("data-state", "stopped")
            expect(page.locator('[data-pin="retired"]')).to_contain_text("refused")
            expect(page.locator("#pins-profile")).to_have_text("fast")
            expect(page.locator("#profile-desc")).to_have_text("quick answers from alpha")
            assert server.call("GET", "/api/profiles").json()["active"] == "fast"

            # a request by the pin's name starts its target: the pin's dot follows live
            assert server.chat("quick").status == 200
            expect(pin.locator('[data-target="alpha"]')).to_have_attribute("data-state", "ready")
            expect(alpha).to_have_attribute("data-state", "ready")
            # the warm selector's dot follows its liveliest target
            expect(auto).to_have_attribute("data-state", "ready")
            expect(auto.locator('[data-target="alpha"]')).to_have_attribute("data-state", "ready")
            shoot(page, tmp_path, "models", full_page=True)

            # a switch made elsewhere shows up through the profileChanged event
            assert server.call("PUT", "/api/profiles/active", {"name": "careful"}).status == 200
            expect(select).to_have_value("careful")
            expect(pin.locator('[data-target="beta"]')).to_be_visible()
            expect(page.locator('[data-pin="retired"]')).to_have_count(0)
            page.set_viewport_size(PHONE)
            shoot(page, tmp_path, "models-phone")
            select.select_option("")
            expect(page.locator("#pin-list")).to_be_hidden()
            assert server.call("GET", "/api/profiles").json()["active"] is None
        finally:
            close(page)


def test_ui_models_page_shows_queue_load_time_and_backoff(browser: Any, tmp_path: Path) -> None:
    script = "print('cannot open weights'); raise SystemExit(3)"
    crashing = f'{sys.executable} -c "{script}" ${{PORT}}'
    config = (
        "routing:\n  scheduler:\n    backoff: {after: 1, initial: 60s}\n"
        "models:\n"
        + fake_model("slow", flags="--startup-delay 4")
        + f"  broken:\n    cmd: {crashing}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    )
    with llamaswap(tmp_path, config) as server:
        page = open_page(browser, server, "models")
        try:
            slow = page.locator('[data-sched="slow"]')
            expect(slow).to_have_text("0 in flight · 0 queued")
            waiting = threading.Thread(target=lambda: server.chat("slow"))
            waiting.start()
            expect(slow).to_have_text("0 in flight · 1 queued")
            waiting.join(20)
            # The learned load time: the 4 s startup delay and whatever the machine adds.
            expect(slow).to_have_text(re.compile(r"0 in flight · 0 queued · loads in ~\d+\.\d s"))
            expect(page.locator('[data-backoff="broken"]')).to_be_hidden()
            assert server.chat("broken").status >= 500
            backoff = page.locator('[data-backoff="broken"]')
            expect(backoff).to_be_visible()
            expect(backoff).to_contain_text("backing off after 1 failed starts")
            expect(backoff).to_contain_text("exit code 3")
            shoot(page, tmp_path, "models-backoff", full_page=True)
        finally:
            close(page)
