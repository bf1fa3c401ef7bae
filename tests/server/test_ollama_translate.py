"""The pure Ollama ⇄ OpenAI translation: requests (ollama_translate), answers (ollama_replies)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamaswap.errors import BadRequest
from llamaswap.server.api.ollama_replies import (
    CompletionBody,
    CompletionStream,
    EmbedBody,
    ErrorBody,
)
from llamaswap.server.api.ollama_translate import (
    chat_request,
    embed_request,
    generate_request,
    image_url,
    keep_alive_seconds,
    model_name,
    parse_object,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


class FakeClock:
    """Monotonic nanoseconds that advance by `step` at every reading."""

    def __init__(self, step: int = 1_000_000) -> None:
        self.now = 0
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


def lines(chunks: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for chunk in chunks for line in chunk.splitlines() if line]


def sse(*events: dict[str, Any] | str) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += b"data: " + data.encode() + b"\n\n"
    return out


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


# -- requests ---------------------------------------------------------------------------------


def test_chat_options_format_think_and_streaming() -> None:
    doc = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 20,
            "seed": 7,
            "stop": ["END"],
            "num_predict": 64,
            "num_ctx": 8192,
            "num_gpu": 99,
        },
        "format": "json",
        "think": True,
    }
    up = chat_request(doc, "m")
    assert up.path == "/v1/chat/completions" and up.stream
    body = up.body
    assert body["stream_options"] == {"include_usage": True}
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "seed", "stop")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 7,
        "stop": ["END"],
    }
    assert body["max_tokens"] == 64
    assert "num_ctx" not in body and "num_gpu" not in body
    assert body["response_format"] == {"type": "json_object"}
    assert body["chat_template_kwargs"] == {"enable_thinking": True}


def test_chat_schema_format_effort_and_unlimited_predict() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    doc = {
        "model": "m",
        "messages": [],
        "format": schema,
        "think": "high",
        "stream": False,
        "options": {"num_predict": -1},
    }
    body = chat_request(doc, "m").body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "schema", "schema": schema},
    }
    assert body["reasoning_effort"] == "high"
    assert "max_tokens" not in body and body["stream"] is False and "stream_options" not in body


def test_images_become_content_parts_with_a_guessed_media_type() -> None:
    doc = {"model": "m", "messages": [{"role": "user", "content": "what?", "images": [PNG]}]}
    [message] = chat_request(doc, "m").body["messages"]
    assert message["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    assert image_url("/9j/4AAQ").startswith("data:image/jpeg;base64,")
    with pytest.raises(BadRequest):
        image_url("not base64 at all!")


def test_tool_calls_get_ids_that_tool_results_answer() -> None:
    doc = {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "weather in Paris and time?"},
            {
                "role": "assistant",
                "content": "",
                "thinking": "two tools",
                "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "clock", "arguments": {}}},
                ],
            },
            {"role": "tool", "content": "12:00", "tool_name": "clock"},
            {"role": "tool", "content": "sunny", "tool_name": "weather"},
        ],
    }
    body = chat_request(doc, "m").body
    assert body["tools"] == doc["tools"]
    assistant, clock, weather = body["messages"][1:]
    assert assistant["reasoning_content"] == "two tools"
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
    ]
    assert (clock["tool_call_id"], weather["tool_call_id"]) == ("call_2", "call_1")


def test_generate_system_images_raw_and_suffix() -> None:
    up = generate_request({"model": "m", "prompt": "hi", "system": "short", "images": [PNG]}, "m")
    assert up.path == "/v1/chat/completions"
    system, user = up.body["messages"]
    assert system == {"role": "system", "content": "short"}
    assert user["content"][0] == {"type": "text", "text": "hi"}
    raw = generate_request({"model": "m", "prompt": "[INST]hi", "raw": True, "stream": False}, "m")
    assert (raw.path, raw.body["prompt"], raw.stream) == ("/v1/completions", "[INST]hi", False)
    with pytest.raises(BadRequest, match="suffix"):
        generate_request({"model": "m", "prompt": "a", "suffix": "b"}, "m")


def test_embed_requests() -> None:
    up = embed_request({"model": "m", "input": ["a", "b"], "dimensions": 4}, "m", legacy=False)
    assert (up.path, up.body) == (
        "/v1/embeddings",
        {"model": "m", "input": ["a", "b"], "dimensions": 4},
    )
    legacy = embed_request({"model": "m", "prompt": "a"}, "m", legacy=True)
    assert legacy.body == {"model": "m", "input": "a"}
    with pytest.raises(BadRequest):
        embed_request({"model": "m", "input": [1]}, "m", legacy=False)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        (-1, -1.0),
        ("-1", -1.0),
    ],
)
def test_keep_alive(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("bad", ["soon", True, [1]])
def test_keep_alive_refuses_nonsense(bad: Any) -> None:
    with pytest.raises(BadRequest):
        keep_alive_seconds(bad)


def test_body_and_model_checks() -> None:
    assert parse_object(b"") == {}
    with pytest.raises(BadRequest, match="invalid JSON"):
        parse_object(b"{")
    with pytest.raises(BadRequest, match="object"):
        parse_object(b"[1]")
    assert model_name({"name": "old-style"}) == "old-style"
    with pytest.raises(BadRequest, match="model is required"):
        model_name({})


# -- answers ----------------------------------------------------------------------------------


def test_stream_content_thinking_tool_calls_and_done() -> None:
    reply = CompletionStream("chat", "asked", FakeClock(), now=lambda: "T")
    chunks = [
        sse(delta(role="assistant")),
        sse(delta(reasoning_content="hmm")),
        # One event split across chunks, as TCP may deliver it.
        sse(delta(content="Hel"))[:10],
        sse(delta(content="Hel"))[10:] + sse(delta(content="lo")),
        sse(
            delta(
                tool_calls=[
                    {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            )
        ),
        sse(delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}])),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}, "[DONE]"),
    ]
    out = lines([b for c in chunks for b in reply.feed(c)] + reply.finish())
    assert [o["message"].get("thinking") for o in out[:1]] == ["hmm"]
    assert [o["message"]["content"] for o in out[1:3]] == ["Hel", "lo"]
    assert out[3]["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}
    ]
    done = out[4]
    assert done["done"] is True and all(o["done"] is False for o in out[:4])
    assert (done["model"], done["created_at"], done["done_reason"]) == ("asked", "T", "stop")
    assert (done["prompt_eval_count"], done["eval_count"]) == (5, 3)
    # No llama.cpp timings: measured from the first token on.
    assert done["prompt_eval_duration"] > 0 and done["eval_duration"] > 0
    assert len(out) == 5


def test_generate_stream_uses_response_and_reports_length() -> None:
    reply = CompletionStream("generate", "m", FakeClock())
    data = sse(
        {"choices": [{"index": 0, "text": "ab", "finish_reason": None}]},
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        "[DONE]",
    )
    out = lines(reply.feed(data) + reply.finish())
    assert out[0]["response"] == "ab" and "message" not in out[0]
    assert out[-1]["done_reason"] == "length"


def test_stream_errors_and_truncation_become_error_lines() -> None:
    failed = CompletionStream("chat", "m", FakeClock())
    out = lines(failed.feed(sse({"error": {"message": "context too long"}})) + failed.finish())
    assert out == [{"error": "context too long"}]
    cut = CompletionStream("chat", "m", FakeClock())
    out = lines(cut.feed(sse(delta(content="par"))) + cut.finish())
    assert out[-1] == {"error": "the upstream stream ended before it was complete"}


def test_body_with_tool_calls_reasoning_and_timings() -> None:
    reply = CompletionBody("chat", "m", FakeClock(step=100_000_000), now=lambda: "T")
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "x", "function": {"name": "f", "arguments": '{"q": "a"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        "timings": {"prompt_ms": 10, "predicted_ms": 30},
    }
    assert reply.feed(json.dumps(answer).encode()) == []
    [obj] = lines(reply.finish())
    assert obj["message"] == {
        "role": "assistant",
        "content": "",
        "thinking": "think",
        "tool_calls": [{"id": "x", "function": {"index": 0, "name": "f", "arguments": {"q": "a"}}}],
    }
    assert (obj["prompt_eval_duration"], obj["eval_duration"]) == (10_000_000, 30_000_000)
    assert obj["total_duration"] == 100_000_000
    assert obj["load_duration"] == 60_000_000  # what the evaluation does not explain


def test_durations_count_from_the_request_arrival() -> None:
    clock = FakeClock(step=0)
    clock.now = 500_000_000
    reply = CompletionStream("chat", "m", clock, started_ns=100_000_000)
    out = lines(reply.feed(sse(delta(content="a"), "[DONE]")) + reply.finish())
    assert out[-1]["total_duration"] == 400_000_000
    embed = EmbedBody("m", clock, legacy=False, started_ns=200_000_000)
    embed.feed(b'{"data": []}')
    assert lines(embed.finish())[0]["total_duration"] == 300_000_000


def test_embed_bodies_and_errors() -> None:
    answer = {
        "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
        "usage": {"prompt_tokens": 3},
    }
    embed = EmbedBody("m", FakeClock(), legacy=False)
    embed.feed(json.dumps(answer).encode())
    [obj] = lines(embed.finish())
    assert (obj["embeddings"], obj["prompt_eval_count"], obj["model"]) == ([[1.0], [2.0]], 3, "m")
    legacy = EmbedBody("m", FakeClock(), legacy=True)
    legacy.feed(json.dumps(answer).encode())
    assert lines(legacy.finish()) == [{"embedding": [1.0]}]
    error = ErrorBody()
    error.feed(b'{"error": {"message": "no such ')
    error.feed(b'thing", "type": "x"}}')
    assert lines(error.finish()) == [{"error": "no such thing"}]
