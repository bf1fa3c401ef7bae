"""The official `ollama` Python client against a real llamaswap over fake upstreams.

One llamaswap serves the module; tests that care which models are loaded start from
`/unload`. The fake upstream streams `asdf` ten times and answers `hi` when not streaming,
with llama.cpp-style `usage` and `timings` (25 prompt tokens in 13 ms, 10 in 17 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import ollama
import pytest
from llamaswap_proc import LlamaswapProcess, fake_model, llamaswap

from helpers import pid_gone, wait_until_sync

CONFIG = (
    "models:\n"
    + fake_model("model-a", "aliases: [alpha]", "capabilities:", "  in: [text, image]")
    + fake_model("model-b", "capabilities:", "  tools: true", "  context: 4096")
    + fake_model("hidden", "unlisted: true")
    + fake_model("loud", "sendLoadingState: true", "unlisted: true")
    + fake_model("brief", "ttl: 300", "unlisted: true")
    + """groups:
  pair:
    swap: true
    exclusive: true
    members: [model-a, model-b]
"""
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaswapProcess]:
    with llamaswap(tmp_path_factory.mktemp("ollama"), CONFIG) as proc:
        yield proc


@pytest.fixture
def idle(server: LlamaswapProcess) -> LlamaswapProcess:
    server.unload_all()
    return server


@pytest.fixture
def client(server: LlamaswapProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base, timeout=15) as c:
        yield c


def test_list_names_the_listed_models(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert names == ["model-a", "model-b"]  # sorted, the unlisted one left out


def test_show_reports_capabilities_and_context(client: ollama.Client) -> None:
    a = client.show("model-a")
    assert a.capabilities == ["completion", "vision"]
    b = client.show("model-b:latest")  # Ollama's default tag names the same model
    assert b.capabilities == ["completion", "tools"]
    assert b.modelinfo is not None and b.modelinfo["llamaswap.context_length"] == 4096
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("nope")
    assert missing.value.status_code == 404
    assert "nope" in missing.value.error


def test_chat_not_streamed_swaps_and_ps_follows(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    assert client.ps().models == []
    answer = client.chat(
        model="model-a", messages=[{"role": "user", "content": "hello"}], stream=False
    )
    assert answer.message.role == "assistant"
    assert answer.message.content == "hi"
    assert answer.done is True and answer.done_reason == "stop"
    assert (answer.prompt_eval_count, answer.eval_count) == (25, 10)
    assert (answer.prompt_eval_duration, answer.eval_duration) == (13_000_000, 17_000_000)
    # From the request's arrival: the model's start is in it (and in load_duration).
    assert answer.total_duration is not None and answer.total_duration > 30_000_000
    assert answer.load_duration == answer.total_duration - 30_000_000
    assert [m.model for m in client.ps().models] == ["model-a"]

    # model-b is in the same swapping group: asking for it stops model-a.
    other = client.chat(
        model="model-b", messages=[{"role": "user", "content": "hello"}], stream=False
    )
    assert other.message.content == "hi"
    ps = client.ps().models
    assert [m.model for m in ps] == ["model-b"]
    assert ps[0].context_length == 4096
    assert idle.running_models() == ["model-b"]


def test_chat_streamed(idle: LlamaswapProcess, client: ollama.Client) -> None:
    parts = list(
        client.chat(model="alpha", messages=[{"role": "user", "content": "hello"}], stream=True)
    )
    assert [p.message.content for p in parts[:-1]] == ["asdf"] * 10
    last = parts[-1]
    assert last.done is True and last.done_reason == "stop"
    assert all(p.done is False for p in parts[:-1])
    assert (last.prompt_eval_count, last.eval_count) == (25, 10)
    assert all(p.model == "alpha" for p in parts)  # the name the client asked for


def test_no_loading_stream_inside_an_ollama_stream(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    # `sendLoadingState` writes progress into OpenAI streams; an Ollama stream gets none.
    parts = list(
        client.chat(model="loud", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert [p.message.content for p in parts[:-1]] == ["asdf"] * 10
    assert all(p.message.thinking is None for p in parts)


def test_generate_streamed_and_not(idle: LlamaswapProcess, client: ollama.Client) -> None:
    whole = client.generate(model="model-a", prompt="hello", system="be brief", stream=False)
    assert whole.response == "hi"
    assert whole.done_reason == "stop"
    parts = list(client.generate(model="model-a", prompt="hello", stream=True))
    assert "".join(p.response or "" for p in parts) == "asdf" * 10
    assert parts[-1].done is True and parts[-1].eval_count == 10


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    result = client.embed(model="model-a", input=["one", "two words"])
    assert len(result.embeddings) == 2
    assert all(len(v) == 8 for v in result.embeddings)
    assert result.embeddings[0] != result.embeddings[1]
    assert result.prompt_eval_count == 3
    legacy = client.embeddings(model="model-a", prompt="one")
    assert list(legacy.embedding) == list(result.embeddings[0])


def test_keep_alive_zero_unloads_after_the_request(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    answer = client.chat(
        model="model-a", messages=[{"role": "user", "content": "hi"}], stream=False, keep_alive=0
    )
    assert answer.message.content == "hi"
    assert wait_until_sync(lambda: idle.running_models() == [], 5.0), idle.running()


def test_empty_generate_loads_and_keep_alive_zero_unloads(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    loaded = client.generate(model="model-b", prompt="")
    assert loaded.done_reason == "load"
    assert idle.running_models() == ["model-b"]
    pids = idle.children()
    unloaded = client.generate(model="model-b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert idle.running_models() == []
    assert wait_until_sync(lambda: all(pid_gone(p) for p in pids), 5.0)


def _ttl_left(server: LlamaswapProcess, model: str) -> float | None:
    [entry] = [e for e in server.running() if e["model"] == model]
    left: float | None = entry["ttlLeftS"]
    return left


def test_keep_alive_duration_replaces_the_ttl_for_that_load(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    # model-a has no ttl; "5m" gives this load one.
    client.chat(model="model-a", messages=[{"role": "user", "content": "hi"}], keep_alive="5m")
    [ps] = client.ps().models
    assert ps.expires_at is not None
    left = (ps.expires_at - datetime.now(UTC)).total_seconds()
    assert 290 < left <= 300
    ttl_left = _ttl_left(idle, "model-a")
    assert ttl_left is not None and 290 < ttl_left <= 300

    # A short one: the ttl loop stops the model once it has been idle that long.
    client.generate(model="model-a", prompt="hi", keep_alive=0.5)
    assert wait_until_sync(lambda: idle.running_models() == [], 5.0), idle.running()

    # The next load has the model's own ttl again (none: it never expires).
    client.generate(model="model-a", prompt="")
    assert [m.expires_at for m in client.ps().models] == [
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    ]
    assert _ttl_left(idle, "model-a") is None


def test_negative_keep_alive_keeps_the_model_loaded(
    idle: LlamaswapProcess, client: ollama.Client
) -> None:
    client.generate(model="brief", prompt="")
    ttl_left = _ttl_left(idle, "brief")
    assert ttl_left is not None and 290 < ttl_left <= 300  # its own ttl: 300s
    client.generate(model="brief", prompt="hi", keep_alive="-1")
    assert _ttl_left(idle, "brief") is None
    [ps] = client.ps().models
    assert ps.expires_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_unknown_model_and_model_management_are_ollama_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert unknown.value.status_code == 404
    assert unknown.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as pull:
        client.pull("model-a")
    assert pull.value.status_code == 400
    assert "config" in pull.value.error
    with pytest.raises(ollama.ResponseError) as delete:
        client.delete("model-a")
    assert delete.value.status_code == 400


def test_upstream_error_becomes_an_ollama_error(server: LlamaswapProcess) -> None:
    # `?fail=` reaches the fake upstream only through /upstream; use a broken body instead.
    reply = server.call("POST", "/api/chat", b"{not json", {"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.json()["error"].startswith("invalid JSON body")


def test_root_answers_ollama_clients_and_redirects_browsers(server: LlamaswapProcess) -> None:
    ollama_ua = {"User-Agent": "ollama/0.12.0 (amd64 linux) Go/go1.24"}
    assert server.call("GET", "/", headers=ollama_ua).text == "Ollama is running"
    assert server.call("HEAD", "/", headers=ollama_ua).status == 200
    browser = server.call("GET", "/", headers={"Accept": "text/html"})
    assert (browser.status, browser.headers["Location"]) == (302, "/ui")


def test_ollama_requests_are_recorded_like_openai_ones(
    server: LlamaswapProcess, client: ollama.Client
) -> None:
    def ollama_rows() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = server.call("GET", "/api/metrics/activity").json()["data"]
        return [r for r in rows if r.get("metadata", {}).get("api") == "ollama /api/chat"]

    seen = {r["id"] for r in ollama_rows()}
    list(client.chat(model="model-b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert wait_until_sync(lambda: len(ollama_rows()) > len(seen), 5.0)
    [row] = [r for r in ollama_rows() if r["id"] not in seen]
    assert (row["model"], row["req_path"], row["resp_status_code"]) == (
        "model-b",
        "/v1/chat/completions",
        200,
    )
    assert (row["tokens"]["input_tokens"], row["tokens"]["output_tokens"]) == (25, 10)
