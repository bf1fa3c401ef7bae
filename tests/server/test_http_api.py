"""The HTTP API of a real llamaswap process: OpenAI SDK, errors, /upstream, unloading.

One llamaswap serves the whole module (tests here leave no lasting state behind except
which models are loaded, and each test that cares starts from `/unload`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from llamaswap_proc import SERVING_PATHS, LlamaswapProcess, chat_body, fake_model, llamaswap

from helpers import pid_gone, wait_until_sync

CONFIG = (
    "models:\n"
    + fake_model("model-a", "aliases: [alpha]", "name: Model A")
    + fake_model("model-b")
    + fake_model("side-c")
    + fake_model("side-d")
    + """groups:
  pair:
    swap: true
    exclusive: true
    members: [model-a, model-b]
  duo:
    swap: false
    exclusive: true
    members: [side-c, side-d]
"""
)
MODEL_IDS = ["model-a", "model-b", "side-c", "side-d"]


@pytest.fixture(scope="module", params=SERVING_PATHS)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LlamaswapProcess]:
    with llamaswap(tmp_path_factory.mktemp("api"), CONFIG, fast_path=request.param) as proc:
        yield proc


@pytest.fixture
def idle(server: LlamaswapProcess) -> LlamaswapProcess:
    """The shared server with no model loaded."""
    server.unload_all()
    return server


def assert_only_ready(server: LlamaswapProcess, model: str) -> None:
    running = server.running()
    assert [(e["model"], e["state"]) for e in running] == [(model, "ready")], running


def assert_serving(server: LlamaswapProcess) -> None:
    reply = server.chat("model-a")
    assert reply.status == 200, reply.text
    assert reply.json()["model"] == "model-a"


# -- 1. the OpenAI SDK ----------------------------------------------------------------------


@pytest.fixture
def client(server: LlamaswapProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=15.0
    ) as c:
        yield c


def test_openai_chat_and_stream_swap_between_group_members(
    idle: LlamaswapProcess, client: openai.OpenAI
) -> None:
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    first = client.chat.completions.create(model="model-a", messages=messages)
    assert first.model == "model-a"
    assert first.choices[0].message.content == "hi"
    pid_a = first.to_dict()["pid"]
    idle.upstream_pids.add(pid_a)
    assert_only_ready(idle, "model-a")

    stream = client.chat.completions.create(model="model-b", messages=messages, stream=True)
    chunks = list(stream)
    assert chunks, "no chunks streamed"
    assert {c.model for c in chunks} == {"model-b"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "asdf" * 10
    assert chunks[-1].choices[0].finish_reason == "stop"
    pid_b = chunks[0].to_dict()["pid"]
    idle.upstream_pids.add(pid_b)
    assert pid_b != pid_a
    assert_only_ready(idle, "model-b")
    assert wait_until_sync(lambda: pid_gone(pid_a), 5.0), "evicted model-a still runs"

    streamed_a = list(
        client.chat.completions.create(model="model-a", messages=messages, stream=True)
    )
    assert {c.model for c in streamed_a} == {"model-a"}
    assert_only_ready(idle, "model-a")

    plain_b = client.chat.completions.create(model="model-b", messages=messages)
    assert plain_b.model == "model-b"
    assert_only_ready(idle, "model-b")


def test_openai_alias_reaches_its_model(idle: LlamaswapProcess, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hi"}]
    )
    # The fake answers with its own --model (the real id), proving which upstream served.
    assert answer.model == "model-a"
    idle.upstream_pids.add(answer.to_dict()["pid"])
    assert_only_ready(idle, "model-a")


def test_openai_models_list(idle: LlamaswapProcess, client: openai.OpenAI) -> None:
    idle.chat("model-b")
    models = client.models.list().data
    assert [m.id for m in models] == MODEL_IDS
    by_id = {m.id: m.to_dict() for m in models}
    for model_id, entry in by_id.items():
        assert entry["object"] == "model"
        assert entry["owned_by"] == "llama-swap"
        assert entry["meta"]["llamaswap"]["type"] == "model"
        expected = "loaded" if model_id == "model-b" else "unloaded"
        assert entry["status"] == {"value": expected}, model_id
    assert by_id["model-a"]["meta"]["llamaswap"]["aliases"] == ["alpha"]
    assert by_id["model-a"]["name"] == "Model A"


# -- 2. errors ------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
NO_SERVER = "no local server found for requested model"
ERROR_CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("unknown model", "POST", CHAT, chat_body("nope"), 404, NO_SERVER),
    ("missing model", "POST", CHAT, {"messages": []}, 404, "no model id could be identified"),
    ("malformed JSON", "POST", CHAT, b'{"model": "model-a",', 400, "invalid JSON body"),
    ("wrong method", "GET", CHAT, None, 405, "method GET not allowed"),
    ("unknown path", "GET", "/no/such/path", None, 404, "404 page not found"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_envelope(
    server: LlamaswapProcess, method: str, path: str, body: Any, status: int, message: str
) -> None:
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
    reply = server.call(method, path, body, headers)
    assert reply.status == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    envelope = reply.json()
    assert envelope["src"] == "llama-swap"
    assert set(envelope["error"]) == {"message", "type", "param", "code"}
    assert envelope["error"]["message"].startswith(message)
    assert envelope["error"]["param"] is None
    assert envelope["error"]["type"] == "invalid_request_error"
    if status == 404:
        assert envelope["error"]["code"] == "not_found"
    if status == 400:
        assert envelope["error"]["code"] == "bad_request"
    if status == 405:
        assert reply.headers["Allow"] == "POST"
    assert_serving(server)


def test_error_as_plain_text(server: LlamaswapProcess) -> None:
    reply = server.call("POST", CHAT, chat_body("nope"), {"Accept": "text/plain"})
    assert reply.status == 404
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.text == f"llama-swap: {NO_SERVER}"
    assert_serving(server)


# -- 3. /upstream passthrough and redirects -------------------------------------------------


@pytest.mark.parametrize("name", ["model-a", "alpha"])
def test_upstream_passthrough(idle: LlamaswapProcess, name: str) -> None:
    reply = idle.call("GET", f"/upstream/{name}/test")
    assert (reply.status, reply.text) == (200, "hi")
    assert_only_ready(idle, "model-a")
    echoed = idle.call("POST", f"/upstream/{name}/some/where?x=1", b"data")
    assert (echoed.status, echoed.text) == (200, "POST /some/where")


@pytest.mark.parametrize(("method", "status"), [("GET", 301), ("POST", 308)])
def test_upstream_without_slash_redirects(
    server: LlamaswapProcess, method: str, status: int
) -> None:
    reply = server.call(method, "/upstream/model-a?x=1&y=two")
    assert reply.status == status
    assert reply.headers["Location"] == "/upstream/model-a/?x=1&y=two"
    plain = server.call(method, "/upstream/alpha")
    assert (plain.status, plain.headers["Location"]) == (status, "/upstream/alpha/")


def test_upstream_unknown_model_and_ui_redirects(server: LlamaswapProcess) -> None:
    missing = server.call("GET", "/upstream/nope/x")
    assert missing.status == 404
    assert missing.json()["error"]["message"] == "model not found"
    listing = server.call("GET", "/upstream")
    assert (listing.status, listing.headers["Location"]) == (302, "/ui/models")
    root = server.call("GET", "/")
    assert (root.status, root.headers["Location"]) == (302, "/ui")


# -- 4. unloading ---------------------------------------------------------------------------


def test_unload_everything(idle: LlamaswapProcess) -> None:
    pid = idle.chat("model-a").json()["pid"]
    reply = idle.call("GET", "/unload")
    assert (reply.status, reply.text) == (200, "OK")
    assert idle.running() == []
    assert wait_until_sync(lambda: pid_gone(pid), 5.0)


def test_unload_one_model_of_a_non_swapping_group(idle: LlamaswapProcess) -> None:
    pid_c = idle.chat("side-c").json()["pid"]
    pid_d = idle.chat("side-d").json()["pid"]
    assert idle.running_models() == ["side-c", "side-d"]

    reply = idle.call("POST", "/api/models/unload/side-c")
    assert reply.status == 200, reply.text
    assert idle.running_models() == ["side-d"]
    assert wait_until_sync(lambda: pid_gone(pid_c), 5.0)
    assert not pid_gone(pid_d)
    again = idle.chat("side-d").json()
    assert again["pid"] == pid_d  # untouched, not restarted

    unknown = idle.call("POST", "/api/models/unload/nope")
    assert unknown.status == 404
    assert unknown.json()["src"] == "llama-swap"
    assert idle.running_models() == ["side-d"]

    everything = idle.call("POST", "/api/models/unload")
    assert everything.status == 200
    assert everything.json() == {"msg": "ok"}
    assert idle.running() == []
    assert wait_until_sync(lambda: pid_gone(pid_d), 5.0)
