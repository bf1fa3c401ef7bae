"""The official `ollama` Python client against llamaswap in front of a real llama.cpp
`llama-server` (Gemma 3 270M): chat and generate streamed and not, JSON format, embed, a
swap, keep_alive 0. Waiting is a poll with a deadline, never a sleep."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import pytest
from llamacpp_support import CHAT, EMBED, Llamaswap

from helpers import wait_until_sync

pytestmark = pytest.mark.llamacpp

GEMMA_270M_EMBEDDING_DIM = 640
MESSAGES = [{"role": "user", "content": "Count from one to ten: one, two, three,"}]
OPTIONS = {"num_predict": 8, "temperature": 0, "seed": 1}


@pytest.fixture
def client(llamaswap_gemma: Llamaswap) -> Iterator[ollama.Client]:
    with ollama.Client(host=llamaswap_gemma.base_url, timeout=90) as c:
        yield c


def test_chat_not_streamed_reports_llama_cpp_counts(client: ollama.Client) -> None:
    answer = client.chat(model=CHAT, messages=MESSAGES, options=OPTIONS, stream=False)
    assert answer.message.content
    assert answer.done_reason in ("stop", "length")
    assert answer.eval_count is not None and 0 < answer.eval_count <= 8
    assert answer.prompt_eval_count is not None and answer.prompt_eval_count > 0
    # From llama.cpp's `timings`: both phases took measurable time.
    assert answer.eval_duration and answer.prompt_eval_duration
    assert answer.total_duration is not None and answer.total_duration >= answer.eval_duration


def test_chat_and_generate_streamed(client: ollama.Client) -> None:
    parts = list(client.chat(model=CHAT, messages=MESSAGES, options=OPTIONS, stream=True))
    assert len(parts) >= 3
    assert "".join(p.message.content or "" for p in parts)
    assert parts[-1].done is True and parts[-1].eval_count
    generated = list(client.generate(model=CHAT, prompt="one, two,", options=OPTIONS, stream=True))
    assert "".join(g.response or "" for g in generated)
    assert generated[-1].done_reason == "length"  # 8 tokens never finish counting to ten


def test_json_format_constrains_the_answer(client: ollama.Client) -> None:
    answer = client.chat(
        model=CHAT,
        messages=[{"role": "user", "content": "Give a JSON object with a key a."}],
        format={"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        options={"num_predict": 32, "temperature": 0, "seed": 1},
        stream=False,
    )
    content = answer.message.content or ""
    assert isinstance(json.loads(content)["a"], int), content


def test_embed_swaps_and_keep_alive_zero_unloads(
    llamaswap_gemma: Llamaswap, client: ollama.Client
) -> None:
    client.chat(model=CHAT, messages=MESSAGES, options={"num_predict": 1}, stream=False)
    assert llamaswap_gemma.running() == {CHAT: "ready"}
    result = client.embed(model=EMBED, input=["the cat sat on the mat", "quarterly tax returns"])
    assert [len(v) for v in result.embeddings] == [GEMMA_270M_EMBEDDING_DIM] * 2
    assert llamaswap_gemma.running() == {EMBED: "ready"}  # the exclusive group swapped
    assert [m.model for m in client.ps().models] == [EMBED]
    client.embed(model=EMBED, input="bye", keep_alive=0)
    assert wait_until_sync(lambda: llamaswap_gemma.running() == {}, 10.0)
