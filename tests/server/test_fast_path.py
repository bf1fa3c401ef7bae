"""The fast path (`server/proxy/fast`) against a real llamaswap, next to the aiohttp path.

What the parametrised suites (api, streaming, edges, scheduling) cannot see: one keep-alive
connection moving from the fast path to aiohttp, pipelined requests, bodies on both sides
of the fast path's size limit, and the bookkeeping every served request leaves behind
(activity row, Prometheus counter, access log line, in-flight entry and its cancel).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import psutil
import pytest
from llamaswap_proc import SERVING_PATHS, LlamaswapProcess, chat_body, fake_model, llamaswap

from helpers import wait_until_sync
from llamaswap.server.proxy.fast.plan import MAX_FAST_BODY

CONFIG = "apiKeys: [sk-one]\nmodels:\n" + fake_model("m")
AUTH = {"Authorization": "Bearer sk-one", "Content-Type": "application/json"}
FAST_ON = "fast path on"


@pytest.fixture(scope="module", params=SERVING_PATHS)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LlamaswapProcess]:
    path = tmp_path_factory.mktemp("fast")
    with llamaswap(path, CONFIG, fast_path=request.param) as proc:
        assert (FAST_ON in proc.log()) is request.param
        yield proc


def post(conn: http.client.HTTPConnection, body: bytes, path: str = "/v1/chat/completions") -> Any:
    conn.request("POST", path, body=body, headers=AUTH)
    reply = conn.getresponse()
    data = reply.read()
    assert reply.status == 200, data
    return json.loads(data)


def test_one_connection_moves_from_the_fast_path_to_aiohttp(server: LlamaswapProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = json.dumps(chat_body("m")).encode()
        assert post(conn, body)["model"] == "m"
        sock = conn.sock
        assert post(conn, body)["model"] == "m"
        conn.request("GET", "/v1/models", headers=AUTH)  # not a model request: aiohttp's
        models = conn.getresponse()
        assert models.status == 200 and b'"m"' in models.read()
        assert post(conn, body)["model"] == "m"  # aiohttp serves the rest of the connection
        assert conn.sock is sock  # one keep-alive connection throughout
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server: LlamaswapProcess) -> None:
    body = json.dumps(chat_body("m")).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-one\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = _Answers()
    parser = answers.parser = httptools.HttpResponseParser(answers)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body + head + body + health)
        while len(answers.done) < 3:
            data = sock.recv(65536)
            assert data, answers.done
            parser.feed_data(data)
    assert [status for status, _ in answers.done] == [200, 200, 200]
    first, second, last = (body for _, body in answers.done)
    assert json.loads(first)["model"] == json.loads(second)["model"] == "m"
    assert last == b"OK"


class _Answers:
    """httptools callbacks collecting (status, body) of each answer on a connection."""

    def __init__(self) -> None:
        self.done: list[tuple[int, bytes]] = []
        self.body = b""
        self.parser: httptools.HttpResponseParser | None = None

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.done.append((self.parser.get_status_code(), self.body))
        self.body = b""


@pytest.mark.parametrize("size", [1024 * 1024, MAX_FAST_BODY + 1024 * 1024])
def test_bodies_on_both_sides_of_the_fast_limit_arrive_whole(
    server: LlamaswapProcess, size: int
) -> None:
    doc = chat_body("m")
    doc["padding"] = ""
    doc["padding"] = "x" * (size - len(json.dumps(doc)))
    body = json.dumps(doc).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        answer = post(conn, body)
    finally:
        conn.close()
    assert answer["h_content_length"] == str(len(body))


def test_keys_are_checked_the_same_way(server: LlamaswapProcess) -> None:
    body = chat_body("m")
    assert server.call("POST", "/v1/chat/completions", body).status == 401
    wrong = {"Authorization": "Bearer sk-two"}
    assert server.call("POST", "/v1/chat/completions", body, wrong).status == 401
    right = {"Authorization": "Bearer sk-one"}
    assert server.call("POST", "/v1/chat/completions", body, right).status == 200


def _get(server: LlamaswapProcess, path: str) -> Any:
    reply = server.call("GET", path, headers={"Authorization": "Bearer sk-one"})
    assert reply.status == 200, reply.text
    return reply.json() if "json" in reply.headers.get("Content-Type", "") else reply.text


def test_a_request_leaves_its_row_counter_and_log_line(server: LlamaswapProcess) -> None:
    before = len(_get(server, "/api/metrics/activity?limit=999")["data"])
    marker = "agent-check/1.0"
    headers = {"Authorization": "Bearer sk-one", "User-Agent": marker}
    assert server.call("POST", "/v/chat/completions", chat_body("m"), headers).status == 200

    def rows() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = _get(server, "/api/metrics/activity?limit=999")["data"]
        return data

    assert wait_until_sync(lambda: len(rows()) == before + 1, 5.0)
    row = max(rows(), key=lambda r: int(r["id"]))
    assert (row["model"], row["req_path"], row["resp_status_code"]) == (
        "m",
        "/v/chat/completions",
        200,
    )
    scrape = _get(server, "/metrics")
    assert 'route="/v/chat/completions",status="200"' in scrape
    line = '"POST /v/chat/completions HTTP/1.1" 200'
    assert wait_until_sync(
        lambda: any(line in x and marker in x for x in server.log().splitlines()), 5.0
    )


def test_a_request_cancelled_from_inflight_ends_and_frees_its_lease(
    server: LlamaswapProcess,
) -> None:
    outcome: list[BaseException | int] = []

    def slow() -> None:
        try:
            reply = server.call(
                "POST", "/v1/chat/completions?wait=20s", chat_body("m"), AUTH, timeout=30
            )
            outcome.append(reply.status)
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    client = threading.Thread(target=slow)
    client.start()

    def entries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _get(server, "/api/inflight")["requests"]
        return found

    assert wait_until_sync(lambda: len(entries()) == 1, 10.0)
    (entry,) = entries()
    cancel = server.call(
        "POST", f"/api/inflight/{entry['id']}/cancel", headers={"Authorization": "Bearer sk-one"}
    )
    assert cancel.status == 200, cancel.text
    client.join(10)
    assert not client.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], int)  # the connection ended
    assert wait_until_sync(lambda: not entries(), 5.0)
    assert wait_until_sync(lambda: _get(server, "/running")["running"][0]["inFlight"] == 0, 5.0)


def _send_queue_of_sockets_on(port: int) -> int:
    """Bytes waiting in the send queues of established TCP sockets whose local port is
    `port` (/proc/net/tcp: the upstream's side of its connections to the proxy)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
            total += int(queues.split(":")[0], 16)
    return total


def test_a_client_that_stops_reading_holds_the_upstream_back(server: LlamaswapProcess) -> None:
    """No buffering on the client's behalf: while it reads nothing, the proxy stops reading
    from the upstream (whose own send queue fills), and the stream then arrives whole."""
    assert server.call("POST", "/v1/chat/completions", chat_body("m"), AUTH).status == 200
    (upstream,) = psutil.Process(server.proc.pid).children(recursive=True)
    (port,) = {c.laddr.port for c in upstream.net_connections("tcp") if c.status == "LISTEN"}
    rss_before = psutil.Process(server.proc.pid).memory_info().rss
    body = json.dumps({**chat_body("m"), "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions?chunks={CHUNKS} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer sk-one\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = _Streamed()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before the window
        sock.settimeout(60)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(head + body)
        # ~14 MB are coming; reading nothing, the upstream's writes back up behind the proxy.
        assert wait_until_sync(lambda: _send_queue_of_sockets_on(port) > 512 * 1024, 30.0)
        grown = psutil.Process(server.proc.pid).memory_info().rss - rss_before
        assert grown < 8 * 1024 * 1024, grown  # not the stream held in the proxy
        while not answer.complete:
            data = sock.recv(1 << 20)
            assert data, "the stream ended early"
            parser.feed_data(data)
    assert parser.get_status_code() == 200
    assert answer.body.count(b"data: ") == CHUNKS + 2  # every chunk, the usage, [DONE]
    assert answer.body.endswith(b"data: [DONE]\n\n")


CHUNKS = 70000


class _Streamed:
    """httptools callbacks collecting one (large) answer."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True
