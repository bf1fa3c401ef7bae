"""The Playground's embeddings, rerank, speech and transcription forms: each tab offers
the models whose capabilities fit first and shows what the fake upstream answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_pages import close, expect, open_page, shoot
from llamaswap_proc import fake_model, llamaswap

pytestmark = pytest.mark.ui

FORMS = (
    "models:\n"
    + fake_model("embed")
    + fake_model(
        "audio-ranker",
        "capabilities:",
        "  in: [text, audio]",
        "  out: [text, audio]",
        "  reranker: true",
    )
)


def test_ui_playground_forms(browser: Any, tmp_path: Path) -> None:
    with llamaswap(tmp_path, FORMS) as server:
        page = open_page(browser, server, "playground/embeddings")
        model = page.locator("#pg-model")
        try:
            expect(model.locator("option")).to_have_count(2)
            model.select_option("embed")
            page.locator("#emb-input").fill("hello world\nsecond text")
            page.locator("#emb-send").click()
            expect(page.locator("#emb-summary")).to_contain_text("2 vectors, dimensions: 8")
            expect(page.locator("#emb-result .vec-len")).to_have_text(["8", "8"])

            page.locator('#pg-tabs a[data-tab="rerank"]').click()
            expect(model).to_have_value("audio-ranker")  # the reranker is offered first
            suited = model.locator('optgroup[label="Rerank models"] option')
            expect(suited).to_have_text(["audio-ranker"])
            page.locator("#rr-query").fill("red apple")
            page.locator("#rr-docs").fill("green pear\na red apple\nred car")
            page.locator("#rr-send").click()
            rows = page.locator("#rr-table tbody tr")
            expect(rows).to_have_count(3)
            expect(rows.first).to_contain_text("a red apple")
            expect(rows.first).to_contain_text("1.0000")
            expect(rows.last).to_contain_text("green pear")
            shoot(page, tmp_path, "playground-rerank")

            page.locator('#pg-tabs a[data-tab="speech"]').click()
            expect(model).to_have_value("audio-ranker")
            page.locator("#sp-input").fill("Hello there")
            page.locator("#sp-send").click()
            expect(page.locator("#sp-summary")).to_have_text("audio/wav, 4044 bytes")
            # the browser decoded it: a quarter-second tone
            page.wait_for_function("document.querySelector('#sp-audio').duration > 0.2")

            page.locator('#pg-tabs a[data-tab="transcription"]').click()
            expect(model).to_have_value("audio-ranker")
            page.locator("#tr-send").click()
            expect(page.locator("#tr-result .error")).to_have_text("Choose an audio file first.")
            page.locator("#tr-file").set_input_files(
                {"name": "hello.wav", "mimeType": "audio/wav", "buffer": bytes(1234)}
            )
            page.locator("#tr-send").click()
            expect(page.locator("#tr-text")).to_have_text("The length of the file is 1234 bytes")

            # every model stays reachable from every tab, after the suited ones
            page.locator('#pg-tabs a[data-tab="speech"]').click()
            expect(model.locator('optgroup[label="Other models"] option')).to_have_text(["embed"])
        finally:
            close(page)
