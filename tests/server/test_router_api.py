"""llama.cpp's router API (`/models`, `/models/load`, `/models/unload`), OpenAI's
`GET /v1/models/{id}`, and errors in Anthropic's and Ollama's shapes — on a real llamaswap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import pytest
from llamaswap_proc import LlamaswapProcess, Reply, fake_model, llamaswap

from helpers import wait_until_sync

KEY = "sk-router-test"
CONFIG = (
    f"apiKeys: [{KEY}]\n"
    "includeAliasesInList: true\n"
    "models:\n"
    + fake_model("fast", "aliases: [quick]")
    + fake_model("slow", flags="--startup-delay 0.8")
    + "groups:\n  all:\n    swap: true\n    members: [fast, slow]\n"
)
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaswapProcess]:
    with llamaswap(tmp_path_factory.mktemp("router"), CONFIG) as proc:
        yield proc


def call(server: LlamaswapProcess, method: str, path: str, body: Any = None) -> Reply:
    return server.call(method, path, body, headers=AUTH, timeout=15)


def running(server: LlamaswapProcess) -> list[str]:
    return [e["model"] for e in call(server, "GET", "/running").json()["running"]]


def statuses(server: LlamaswapProcess) -> dict[str, Any]:
    reply = call(server, "GET", "/models")
    assert reply.status == 200
    return {e["id"]: e["status"] for e in reply.json()["data"]}


def test_load_reports_loading_then_loaded_and_unload(server: LlamaswapProcess) -> None:
    call(server, "GET", "/unload")
    assert statuses(server) == {
        "fast": {"value": "unloaded"},
        "quick": {"value": "unloaded"},
        "slow": {"value": "unloaded"},
    }
    answers: list[Reply] = []
    loader = threading.Thread(
        target=lambda: answers.append(call(server, "POST", "/models/load", {"model": "slow"}))
    )
    loader.start()
    try:
        assert wait_until_sync(lambda: statuses(server)["slow"]["value"] == "loading", 5.0)
    finally:
        loader.join(15)
    assert (answers[0].status, answers[0].json()) == (200, {"success": True})
    slow = statuses(server)["slow"]
    assert slow["value"] == "loaded"
    assert slow["args"][1:3] == ["-m", "llamaswap.testing.fake_upstream"]
    # /v1/models keeps llama-swap's two values.
    listed = {e["id"]: e["status"] for e in call(server, "GET", "/v1/models").json()["data"]}
    assert listed["slow"] == {"value": "loaded"}

    # Loading by alias swaps within the group.
    assert call(server, "POST", "/models/load", {"model": "quick"}).json() == {"success": True}
    assert running(server) == ["fast"]
    assert statuses(server)["quick"]["value"] == "loaded"
    assert call(server, "POST", "/models/unload", {"model": "fast"}).json() == {"success": True}
    assert running(server) == []


def test_load_errors(server: LlamaswapProcess) -> None:
    missing = call(server, "POST", "/models/load", {"model": "nope"})
    assert (missing.status, missing.json()["error"]["message"]) == (404, "model nope not found")
    nameless = call(server, "POST", "/models/unload", {})
    assert (nameless.status, nameless.json()["error"]["message"]) == (400, '"model" is required')
    assert server.call("POST", "/models/load", {"model": "fast"}).status == 401


def test_get_one_model(server: LlamaswapProcess) -> None:
    found = call(server, "GET", "/v1/models/quick")
    assert found.status == 200
    entry = found.json()
    assert (entry["id"], entry["object"], entry["meta"]["llamaswap"]["modelID"]) == (
        "quick",
        "model",
        "fast",
    )
    missing = call(server, "GET", "/v1/models/nope")
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_messages_errors_are_anthropic_shaped(server: LlamaswapProcess) -> None:
    body = {"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    missing = call(server, "POST", "/v1/messages", body)
    assert missing.status == 404
    assert missing.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no local server found for requested model",
        },
    }
    unauthorized = server.call("POST", "/v1/messages", body)
    assert unauthorized.status == 401
    assert unauthorized.json()["error"]["type"] == "authentication_error"
    assert unauthorized.headers["WWW-Authenticate"]  # the headers survive the reshaping
    # The official SDK reads the error type from that shape.
    # Closed when done: its pooled socket would otherwise be reported by a later test.
    with (
        anthropic.Anthropic(base_url=server.base, api_key="wrong", max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        client.messages.create(**body)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "authentication_error"


def test_ollama_routes_use_the_api_key_and_answer_ollama_errors(server: LlamaswapProcess) -> None:
    with (
        ollama.Client(host=server.base, timeout=15) as anonymous,
        pytest.raises(ollama.ResponseError) as raised,
    ):
        anonymous.list()
    assert raised.value.status_code == 401
    assert raised.value.error == "unauthorized: invalid or missing API key"
    with ollama.Client(host=server.base, headers=AUTH, timeout=15) as client:
        assert [m.model for m in client.list().models] == ["fast", "quick", "slow"]
