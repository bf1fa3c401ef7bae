"""Leases under real load: 429s, unbuffered streams, client disconnects, TTL, start failure.

One llamaswap serves the module; the tests run one after another, each waiting on
conditions with deadlines rather than sleeping.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from llamaswap_proc import SERVING_PATHS, LlamaswapProcess, Reply, chat_body, fake_model, llamaswap

from helpers import pid_gone, wait_until_sync

BROKEN_CMD = f'{sys.executable} -c "import sys; sys.exit(3)"'
CONFIG = (
    "models:\n"
    + fake_model("limited", "concurrencyLimit: 1")
    + fake_model("stream-a")
    + fake_model("stream-b")
    + fake_model("short-ttl", "ttl: 1")
    + f"""  broken:
    cmd: {BROKEN_CMD}
    proxy: http://127.0.0.1:9
groups:
  pair:
    swap: true
    exclusive: true
    members: [stream-a, stream-b]
"""
)
CHAT = "/v1/chat/completions"
TOO_MANY = (
    b'{"src":"llama-swap","error":{"message":"Too many requests",'
    b'"type":"rate_limit_error","param":null,"code":"concurrency_limit"}}'
)


@pytest.fixture(scope="module", params=SERVING_PATHS)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LlamaswapProcess]:
    path = tmp_path_factory.mktemp("streaming")
    with llamaswap(path, CONFIG, fast_path=request.param) as proc:
        yield proc


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@contextlib.contextmanager
def open_stream(
    server: LlamaswapProcess, model: str, query: str
) -> Iterator[http.client.HTTPResponse]:
    """POST a streaming chat; yield the response with its body unread; then hang up."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{server.port}", timeout=15)
    try:
        body = json.dumps(chat_body(model, stream=True))
        conn.request("POST", f"{CHAT}?{query}", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        yield resp
        resp.close()
    finally:
        conn.close()  # closes the socket: to the server, the client is gone


def read_event(resp: http.client.HTTPResponse) -> bytes:
    """The next non-blank SSE line."""
    while True:
        line = resp.readline()
        if not line:
            return b""
        if line.strip():
            return line.strip()


# -- 5. concurrencyLimit ---------------------------------------------------------------------


def test_concurrency_limit_answers_429_while_busy(
    server: LlamaswapProcess, pool: ThreadPoolExecutor
) -> None:
    assert server.chat("limited").status == 200  # loaded, so the slow request is admitted fast
    slow: Future[Reply] = pool.submit(server.call, "POST", f"{CHAT}?wait=6s", chat_body("limited"))

    def slow_is_being_served() -> bool:
        # Probe only once the slow request holds the one slot: a probe sent earlier could
        # take the slot itself and make the slow request the one that gets the 429.
        inflight = server.call("GET", "/api/inflight").json()["requests"]
        return any(r["model"] == "limited" and r["elapsed_ms"] >= 200 for r in inflight)

    assert wait_until_sync(slow_is_being_served, 5), "the slow request never got in"
    reply = server.call("POST", CHAT, chat_body("limited"), {"Accept": "text/plain"})
    assert reply.status == 429, reply.text
    rejected = [reply]
    assert not slow.done()
    reply = rejected[0]
    assert reply.headers["Retry-After"] == "1"
    assert reply.headers["Content-Type"].startswith("application/json")  # despite Accept
    assert reply.body == TOO_MANY

    finished = slow.result(timeout=10)
    assert finished.status == 200
    assert finished.json()["model"] == "limited"
    after = server.chat("limited")
    assert after.status == 200, after.text


# -- 6. streaming is not buffered -------------------------------------------------------------


def test_stream_chunks_arrive_as_sent(server: LlamaswapProcess) -> None:
    assert server.chat("stream-a").status == 200  # exclude the model's start from the timing
    began = time.monotonic()
    arrivals: list[float] = []
    events: list[bytes] = []
    with open_stream(server, "stream-a", "chunks=5&chunk_delay=300") as resp:
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        while event := read_event(resp):
            arrivals.append(time.monotonic() - began)
            events.append(event)
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 7  # 5 content chunks, the final chunk with usage, [DONE]
    total = arrivals[-1]
    assert total >= 1.2  # four 300 ms gaps
    assert arrivals[0] < total - 0.6, arrivals
    assert arrivals[2] < total - 0.3, arrivals


# -- 7. a client that leaves mid-stream frees its lease --------------------------------------


def test_disconnect_mid_stream_frees_the_lease(server: LlamaswapProcess) -> None:
    with open_stream(server, "stream-a", "chunks=1000&chunk_delay=50") as resp:  # ~50 s
        first = json.loads(read_event(resp).removeprefix(b"data: "))
    assert first["model"] == "stream-a"
    pid_a = first["pid"]
    server.upstream_pids.add(pid_a)

    began = time.monotonic()
    swapped = server.call("POST", CHAT, chat_body("stream-b"), timeout=8)
    elapsed = time.monotonic() - began
    assert swapped.status == 200, swapped.text
    assert swapped.json()["model"] == "stream-b"
    assert elapsed < 5.0, f"swap waited {elapsed:.2f}s for a lease the client had dropped"
    assert wait_until_sync(lambda: pid_gone(pid_a), 5.0)
    assert server.running_models() == ["stream-b"]

    # The same with an explicit unload instead of a swap.
    with open_stream(server, "stream-b", "chunks=1000&chunk_delay=50") as resp:
        pid_b = json.loads(read_event(resp).removeprefix(b"data: "))["pid"]
    unload = server.call("POST", "/api/models/unload/stream-b", timeout=8)
    assert unload.status == 200
    assert "stream-b" not in server.running_models()
    assert wait_until_sync(lambda: pid_gone(pid_b), 5.0)


# -- 8. ttl ---------------------------------------------------------------------------------


def test_ttl_unloads_idle_model_and_restarts_on_demand(server: LlamaswapProcess) -> None:
    first = server.chat("short-ttl")
    assert first.status == 200
    served_at = time.monotonic()
    assert "short-ttl" in server.running_models()
    assert wait_until_sync(lambda: "short-ttl" not in server.running_models(), 5.0)
    assert time.monotonic() - served_at >= 0.9, "unloaded before the ttl ran out"
    assert wait_until_sync(lambda: pid_gone(first.json()["pid"]), 5.0)

    second = server.chat("short-ttl")
    assert second.status == 200
    assert second.json()["pid"] != first.json()["pid"]
    assert "short-ttl" in server.running_models()


def test_ttl_runs_from_the_last_of_overlapping_requests(
    server: LlamaswapProcess, pool: ThreadPoolExecutor
) -> None:
    # Requests granted while others still hold leases do not wake the ttl timer; the last
    # release must, or the idle model would never be unloaded.
    assert server.chat("short-ttl").status == 200
    slow = [
        pool.submit(server.chat, "short-ttl", path=f"/v1/chat/completions?wait={ms}ms")
        for ms in (300, 500, 700, 900)
    ]
    fast = [server.chat("short-ttl") for _ in range(20)]  # granted beside the slow ones
    assert all(reply.status == 200 for reply in [*fast, *(f.result(10) for f in slow)])
    last_done = time.monotonic()
    assert "short-ttl" in server.running_models()
    assert wait_until_sync(lambda: "short-ttl" not in server.running_models(), 5.0)
    assert time.monotonic() - last_done >= 0.9, "unloaded before the ttl ran out"


# -- 9. a model that cannot start -------------------------------------------------------------


def test_start_failure_is_an_error_and_others_still_work(server: LlamaswapProcess) -> None:
    reply = server.chat("broken")
    assert reply.status == 500, reply.text
    envelope = reply.json()
    assert envelope["src"] == "llama-swap"
    assert envelope["error"]["type"] == "server_error"
    assert "exited prematurely" in envelope["error"]["message"]
    assert "broken" not in server.running_models()

    works = server.chat("stream-a")
    assert works.status == 200, works.text
    assert works.json()["model"] == "stream-a"
    again = server.chat("broken")  # tried from scratch, fails the same way
    assert again.status == 500
