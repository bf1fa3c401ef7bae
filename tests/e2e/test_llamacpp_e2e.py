"""llamaswap in front of a real llama.cpp `llama-server` (Gemma 3 270M), through the OpenAI SDK.

Each test sets up the state it needs (which model is loaded) by itself, so any one of them
runs alone; in file order they share loads where they can. Waiting is always a poll with a
deadline, never a sleep.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from llamacpp_support import (
    CHAT,
    EMBED,
    LOADING,
    START_TIMEOUT,
    TTL_MODEL,
    TTL_SECONDS,
    LlamacppAssets,
    Llamaswap,
    gemma_model,
)
from openai.types.chat import ChatCompletionMessageParam

from helpers import wait_until_sync

pytestmark = pytest.mark.llamacpp

GEMMA_270M_EMBEDDING_DIM = 640  # gemma3.embedding_length of Gemma 3 270M
PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Count from one to ten: one, two, three,"}
]


def chat_once(server: Llamaswap, model: str, max_tokens: int = 8) -> str:
    reply = server.client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0, seed=1
    )
    return reply.choices[0].message.content or ""


def test_chat_non_streaming(llamaswap_gemma: Llamaswap) -> None:
    reply = llamaswap_gemma.client.chat.completions.create(
        model=CHAT, messages=PROMPT, max_tokens=8, temperature=0, seed=1
    )
    assert reply.choices[0].message.content, reply
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert llamaswap_gemma.running() == {CHAT: "ready"}


def test_chat_streaming(llamaswap_gemma: Llamaswap) -> None:
    stream = llamaswap_gemma.client.chat.completions.create(
        model=CHAT, messages=PROMPT, max_tokens=8, temperature=0, seed=1, stream=True
    )
    pieces = []
    finish_reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    assert len(pieces) >= 3, pieces
    assert "".join(pieces)
    assert finish_reasons, "the stream never finished a choice"


def test_swap_between_models_in_one_group(llamaswap_gemma: Llamaswap) -> None:
    chat_once(llamaswap_gemma, CHAT, max_tokens=1)
    assert llamaswap_gemma.running() == {CHAT: "ready"}
    first = llamaswap_gemma.upstream_pids()
    assert len(first) == 1

    llamaswap_gemma.client.embeddings.create(model=EMBED, input="swap")
    assert llamaswap_gemma.running() == {EMBED: "ready"}
    second = llamaswap_gemma.upstream_pids()
    assert len(second) == 1 and second != first

    chat_once(llamaswap_gemma, CHAT, max_tokens=1)
    assert llamaswap_gemma.running() == {CHAT: "ready"}


def test_embeddings(llamaswap_gemma: Llamaswap) -> None:
    reply = llamaswap_gemma.client.embeddings.create(
        model=EMBED, input=["the cat sat on the mat", "quarterly tax returns"]
    )
    vectors = [item.embedding for item in reply.data]
    assert len(vectors) == 2
    for vector in vectors:
        assert len(vector) == GEMMA_270M_EMBEDDING_DIM
        assert any(abs(x) > 1e-6 for x in vector)
    assert vectors[0] != vectors[1]


def test_unload(llamaswap_gemma: Llamaswap) -> None:
    chat_once(llamaswap_gemma, CHAT, max_tokens=1)
    assert llamaswap_gemma.running() == {CHAT: "ready"}
    pids = llamaswap_gemma.upstream_pids()
    assert pids

    assert llamaswap_gemma.get("/unload") == (200, b"OK")
    assert wait_until_sync(lambda: llamaswap_gemma.running() == {}, 10.0), llamaswap_gemma.running()
    assert wait_until_sync(lambda: not llamaswap_gemma.upstream_pids(), 10.0)


def test_ttl_unloads_an_idle_model(llamaswap_gemma: Llamaswap) -> None:
    chat_once(llamaswap_gemma, TTL_MODEL, max_tokens=1)
    idle_since = time.monotonic()
    assert llamaswap_gemma.running() == {TTL_MODEL: "ready"}

    assert wait_until_sync(lambda: llamaswap_gemma.running() == {}, TTL_SECONDS + 10.0), (
        f"{TTL_MODEL} (ttl {TTL_SECONDS}s) still running: {llamaswap_gemma.running()}"
    )
    idle = time.monotonic() - idle_since
    assert idle >= TTL_SECONDS - 0.5, f"unloaded after {idle:.2f}s, before its ttl"
    assert wait_until_sync(lambda: not llamaswap_gemma.upstream_pids(), 10.0)


@pytest.mark.skipif(
    importlib.util.find_spec("llamaswap.server.proxy.loading") is None,
    reason="sendLoadingState lands with the operator-surface work",
)
def test_send_loading_state_during_a_real_load(llamaswap_gemma: Llamaswap) -> None:
    assert llamaswap_gemma.get("/unload") == (200, b"OK")
    assert wait_until_sync(lambda: llamaswap_gemma.running() == {}, 10.0)

    stream = llamaswap_gemma.client.chat.completions.create(
        model=LOADING, messages=PROMPT, max_tokens=8, temperature=0, seed=1, stream=True
    )
    reasoning: list[str] = []
    content: list[str] = []
    for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if text := extra.get("reasoning_content"):
                assert not content, "loading progress after the answer started"
                reasoning.append(text)
            if choice.delta.content:
                content.append(choice.delta.content)
    progress = "".join(reasoning)
    assert LOADING in progress, progress
    assert content, f"no answer after the loading progress: {progress!r}"
    assert llamaswap_gemma.running() == {LOADING: "ready"}


def test_sigterm_with_a_ttl_model_loaded_stops_everything(
    llamacpp_assets: LlamacppAssets, tmp_path: Path
) -> None:
    config = {"models": {"gemma-ttl300": gemma_model(llamacpp_assets, ttl=300)}}
    server = Llamaswap(config, tmp_path, stop_timeout=10.0)
    try:
        assert wait_until_sync(server.healthy, START_TIMEOUT), server.log()
        server.client.chat.completions.create(
            model="gemma-ttl300", messages=PROMPT, max_tokens=1, temperature=0
        )
        assert server.upstream_pids()
    finally:
        server.stop()  # SIGTERM: exit code 0 within 10 s and no llama-server left
