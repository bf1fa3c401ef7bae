"""The Models page's device memory, live from the `memory` event, with fake GPUs: a bar per
device with a segment per model (loaded and asleep told apart), declared vs measured bytes,
the badge of a model using more than it declared, host memory, and the last eviction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_pages import close, expect, open_page, shoot
from llamaswap_proc import fake_model, llamaswap, memory_model

from helpers import install_fake_gpus

pytestmark = pytest.mark.ui

GIB_MIB = 1024


CONFIG = (
    "devices: {gpu0: {memory: 24GiB}}\n"
    "hostMemory: 32GiB\n"
    "models:\n"
    + memory_model("greedy", 10, 20)  # says 10 GiB, holds 20
    + memory_model("sleepy", 14, 14, "sleep: vllm", flags="--sleep-delay 0.1")
    + memory_model("other", 12, 12)
)


def test_ui_models_page_shows_device_memory_and_the_last_eviction(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_gpus(tmp_path, monkeypatch, [("Fake GPU", 24 * GIB_MIB)])
    with llamaswap(tmp_path, CONFIG) as server:
        page = open_page(browser, server, "models")
        try:
            device = page.locator('[data-device="gpu0"]')
            expect(device).to_contain_text("0 B of 24 GiB used")
            expect(device).to_contain_text("no model on this device")
            expect(page.locator("#last-eviction")).to_contain_text("none yet")
            expect(page.locator("#host-memory")).to_contain_text("0 B of 32 GiB")

            assert server.chat("greedy").status == 200
            # measured after it became ready: the badge and the counted 20 GiB show up live
            expect(device.locator('[data-over="greedy"]')).to_contain_text(
                "uses 20 GiB, more than declared"
            )
            expect(device.locator('[data-mem-model="greedy"]')).to_contain_text(
                "declared 10 GiB · measured 20 GiB"
            )
            expect(device).to_contain_text("20 GiB of 24 GiB used · 4 GiB free")
            expect(device.locator('[data-seg="greedy"]')).to_have_class("seg ready over")

            assert server.chat("sleepy").status == 200  # 20 + 14 > 24: greedy is stopped
            expect(page.locator("#last-eviction")).to_contain_text(
                "sleepy needed 14 GiB on gpu0, 4 GiB free: stopped greedy"
            )
            expect(device.locator('[data-seg="greedy"]')).to_have_count(0)

            assert server.chat("other").status == 200  # 14 + 12 > 24: sleepy sleeps
            expect(device.locator('[data-seg="sleepy"]')).to_have_attribute("data-state", "asleep")
            expect(device.locator('[data-seg="other"]')).to_have_attribute("data-state", "ready")
            expect(device.locator('[data-mem-model="sleepy"]')).to_contain_text(
                "asleep: device memory free"
            )
            expect(device).to_contain_text("12 GiB of 24 GiB used")
            expect(page.locator("#last-eviction")).to_contain_text(
                "other needed 12 GiB on gpu0, 10 GiB free: put sleepy to sleep"
            )
            expect(page.locator("#host-memory")).to_contain_text("14 GiB of 32 GiB")
            expect(page.locator("#host-memory")).to_contain_text("(sleepy)")
            expect(device.locator(".tag.warn")).to_have_count(0)
            shoot(page, tmp_path, "models-devices", full_page=True)
        finally:
            close(page)


def test_ui_models_page_hides_devices_when_nothing_is_placed_by_memory(
    browser: Any, tmp_path: Path
) -> None:
    with llamaswap(tmp_path, "models:\n" + fake_model("plain")) as server:
        page = open_page(browser, server, "models")
        try:
            expect(page.locator('[data-model="plain"]')).to_be_visible()
            expect(page.locator("#device-list")).to_be_hidden()
        finally:
            close(page)
