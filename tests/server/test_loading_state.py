"""sendLoadingState: progress streamed while a chat model loads, then the model's own stream."""

from __future__ import annotations

import json
import sys
import time

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.server.proxy.loading import REMARK_CHUNK, REMARKS


def events_of(text: str) -> list[str]:
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def reasoning_of(events: list[str]) -> str:
    parts = []
    for event in events:
        if event == "[DONE]":
            continue
        delta = json.loads(event).get("choices", [{}])[0].get("delta", {})
        parts.append(delta.get("reasoning_content", ""))
    return "".join(parts)


async def test_progress_then_upstream_stream() -> None:
    config = (
        fake_models_yaml(["slow"]).replace("--model slow", "--model slow --startup-delay 1.6")
        + "sendLoadingState: true\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        body = {"model": "slow", "stream": True, "messages": []}
        started = time.monotonic()
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await resp.content.readuntil(b"\n\n")
            first_after = time.monotonic() - started
            rest = (await resp.read()).decode()
        # The first progress event arrives long before the upstream is ready (≥1.6 s).
        assert first_after < 1.0, first_after
        events = events_of(first.decode() + rest)
        reasoning = reasoning_of(events)
        assert "loading model: slow" in reasoning
        assert "." in reasoning and "Done! (" in reasoning
        contents = [
            json.loads(e)["choices"][0]["delta"].get("content")
            for e in events
            if e != "[DONE]" and "content" in json.loads(e)["choices"][0]["delta"]
        ]
        assert contents.count("asdf") >= 5, contents
        assert events[-1] == "[DONE]"


async def test_ready_model_gets_no_progress_block() -> None:
    config = fake_models_yaml(["m"]) + "sendLoadingState: true\n"
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        body = {"model": "m", "stream": True, "messages": []}
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            await resp.read()  # first request loads the model (with progress)
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            text = await resp.text()
        assert "reasoning_content" not in text
        assert events_of(text)[-1] == "[DONE]"


async def test_start_failure_ends_the_stream_with_the_error_envelope() -> None:
    config = (
        "sendLoadingState: true\nmodels:\n  broken:\n"
        f'    cmd: {sys.executable} -c "import sys; sys.exit(3)"\n'
        "    proxy: http://127.0.0.1:9\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        body = {"model": "broken", "stream": True, "messages": []}
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200  # the stream had started; the error is in its body
            events = events_of(await resp.text())
        error = json.loads(events[-1])
        assert error["error"]["code"] == "internal_error"
        assert "broken" in error["error"]["message"]


async def test_long_load_types_out_a_remark_then_keeps_ticking() -> None:
    config = (
        fake_models_yaml(["slow"]).replace("--model slow", "--model slow --startup-delay 3")
        + "sendLoadingState: true\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        body = {"model": "slow", "stream": True, "messages": []}
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            events = events_of((await resp.read()).decode())
    pieces = [reasoning_of([e]) for e in events if e != "[DONE]"]
    reasoning = "".join(pieces)
    shown = [r for r in REMARKS if f"\n{r} " in reasoning]
    assert len(shown) == 1, reasoning  # one remark on the first tick; the next is ≥5 s later
    assert shown[0].endswith("...")
    # Typed out in small pieces, not sent whole; dots resume after it.
    assert all(len(p) <= REMARK_CHUNK + 1 for p in pieces if p and p in shown[0] + " ")
    assert not any(shown[0] in p for p in pieces)
    after = reasoning.split(shown[0], 1)[1]
    assert "." in after.split("Done!", 1)[0], reasoning
