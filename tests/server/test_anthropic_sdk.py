"""The official Anthropic Python SDK talks to llamaswap's /v1/messages, streaming and not."""

from __future__ import annotations

import asyncio

import anthropic

from inprocess import fake_models_yaml, running_llamaswap


def _use_sdk(base: str) -> tuple[str, list[str], str]:
    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="claude-local", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
    )
    with client.messages.stream(
        model="other", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    return message.content[0].text, pieces, final.model  # type: ignore[union-attr]


async def test_messages_and_streaming_through_a_swap() -> None:
    async with running_llamaswap(fake_models_yaml(["claude-local", "other"])) as (base, _):
        text, pieces, final_model = await asyncio.to_thread(_use_sdk, base)
    assert text == "hi"
    assert pieces == ["hi"] * 5
    assert final_model == "other"  # answered by the swapped-in model
