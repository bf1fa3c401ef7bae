"""`timeouts.responseHeader`: an upstream that accepts a request and never answers gets the
client a 504 naming the timeout, instead of a request that hangs."""

from __future__ import annotations

import time

import aiohttp
import pytest

from inprocess import fake_models_yaml, running_llamaswap


@pytest.mark.parametrize("stream", [False, True])
async def test_silent_upstream_gets_504_after_the_response_header_timeout(stream: bool) -> None:
    config = fake_models_yaml(["mute"], extra="timeouts: {responseHeader: 1}")
    body = {"model": "mute", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200  # the model started; a prompt answer is not delayed
        started = time.monotonic()
        async with session.post(f"{base}/v1/chat/completions?wait=20s", json=body) as resp:
            elapsed = time.monotonic() - started
            assert resp.status == 504
            message = (await resp.json())["error"]["message"]
        assert "no response headers within 1s (timeouts.responseHeader)" in message
        assert 0.9 <= elapsed < 5.0


async def test_no_response_header_timeout_by_default() -> None:
    config = fake_models_yaml(["slowpoke"])
    body = {"model": "slowpoke", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        running_llamaswap(config) as (base, _),
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v1/chat/completions?wait=1500ms", json=body) as resp,
    ):
        assert resp.status == 200
