"""The Models page's buttons and per-model details, and the Timeline's swap history:
the profile switcher is hidden without profiles, Load/Unload follow the model's state, each
model shows its group, ttl, time left, port and pid, and the Timeline shows the swaps and
state changes made before it was opened, with swap labels that do not overlap."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from browser_pages import close, expect, open_page, shoot
from llamaswap_proc import fake_model, llamaswap

pytestmark = pytest.mark.ui

CONFIG = (
    "models:\n"
    + fake_model("alpha", "ttl: 60", flags="--startup-delay 1.5")
    + fake_model("beta")
    + "groups:\n  pair:\n    members: [alpha]\n    exclusive: false\n"
)


def test_ui_models_buttons_follow_state_and_details_show(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, CONFIG) as server:
        page = open_page(browser, server, "models")
        try:
            alpha = page.locator('[data-model="alpha"]')
            load = alpha.get_by_role("button", name="Load", exact=True)
            unload = alpha.get_by_role("button", name="Unload", exact=True)
            residency = page.locator('[data-residency="alpha"]')
            expect(alpha).to_have_attribute("data-state", "stopped")
            # No profiles configured: the switcher is not shown (its CSS display must not
            # beat the `hidden` attribute).
            expect(page.locator("#profile-box")).to_be_hidden()
            expect(load).to_be_enabled()
            expect(unload).to_be_disabled()
            expect(residency).to_have_text(re.compile(r"^group pair · ttl 60 s · port \d+$"))
            port_beta = int(
                page.locator('[data-residency="beta"]').inner_text().rsplit("port ", 1)[1]
            )
            expect(page.locator('[data-residency="beta"]')).to_have_text(
                f"group (default) · no ttl · port {port_beta}"
            )

            load.click()
            expect(alpha).to_have_attribute("data-state", "starting")
            expect(load).to_be_disabled()
            expect(unload).to_be_enabled()
            expect(alpha).to_have_attribute("data-state", "ready")
            expect(load).to_be_disabled()
            expect(unload).to_be_enabled()
            reply = server.chat("alpha")
            pid = reply.json()["pid"]
            port = int(server.running()[0]["proxy"].rsplit(":", 1)[1])
            expect(residency).to_have_text(
                re.compile(rf"^group pair · ttl 60 s · unloads in \d+ s · port {port} · pid {pid}$")
            )
            shown = residency.inner_text()
            left = int(re.search(r"unloads in (\d+) s", shown).group(1))  # type: ignore[union-attr]
            assert 50 <= left <= 60
            expect(residency).not_to_have_text(shown)  # the countdown ticks in the page
            shoot(page, tmp_path, "models-details")

            unload.click()
            expect(alpha).to_have_attribute("data-state", "stopped")
            expect(load).to_be_enabled()
            expect(unload).to_be_disabled()
            expect(residency).to_have_text(f"group pair · ttl 60 s · port {port}")
        finally:
            close(page)


def boxes_overlap(a: list[float], b: list[float]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


LABEL_BOXES = """() => [...document.querySelectorAll('svg.timeline g.swap')].map((g) => {
  const t = g.querySelector('.swap-label');
  if (!t) return null;
  const b = t.getBBox();
  return [b.x, b.y, b.width, b.height];
})"""


def test_ui_timeline_shows_earlier_swaps_with_labels_apart(browser: Any, tmp_path: Path) -> None:
    config = "models:\n" + fake_model("alpha") + fake_model("beta")
    with llamaswap(tmp_path, config) as server:
        # Six swaps in a few seconds, before the page is opened: three per lane, a few
        # pixels apart on the 5-minute window.
        for model in ("alpha", "beta") * 3:
            assert server.chat(model).status == 200
        page = open_page(browser, server, "timeline")
        try:
            expect(page.locator("#swap-list li")).to_have_count(6)
            expect(page.locator("#swap-list li").first).to_contain_text("evicted alpha")
            swaps = page.locator("svg.timeline g.swap")
            expect(swaps).to_have_count(6)
            # The lanes are rebuilt from the state changes the server kept: each model was
            # ready three times (beta still is).
            alpha_ready = page.locator('g.lane[data-model="alpha"] rect.seg-ready')
            beta_ready = page.locator('g.lane[data-model="beta"] rect.seg-ready')
            expect(alpha_ready).to_have_count(3)
            expect(beta_ready).to_have_count(3)
            boxes = page.evaluate(LABEL_BOXES)
            # Newest first: the latest swap of each lane keeps its label.
            assert boxes[0] is not None and boxes[1] is not None
            shown = [b for b in boxes if b is not None]
            assert len(shown) >= 4
            for i, a in enumerate(shown):
                for b in shown[i + 1 :]:
                    assert not boxes_overlap(a, b), (a, b)
            shoot(page, tmp_path, "timeline-history")
            # A reconnection's snapshot replaces the list: nothing is doubled.
            page.reload()
            expect(swaps).to_have_count(6)
            expect(alpha_ready).to_have_count(3)
            assert server.chat("alpha").status == 200
            expect(swaps).to_have_count(7)
            expect(page.locator("#swap-list li")).to_have_count(7)
        finally:
            close(page)
