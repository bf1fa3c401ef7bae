"""Bad input at the edges, sent on raw sockets to a real llamaswap (issue 12, item 4).

Path traversal through `/upstream`, request smuggling shapes and oversize heads are refused
with a JSON error and never reach the upstream; a JSON body sent with curl's default form
type is read as JSON. The upstream here is the fake upstream with its request log on, which
llamaswap mirrors to its own output (`logToStdout: both`), so the test sees every request
the upstream received.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator

import pytest
from llamaswap_proc import SERVING_PATHS, LlamaswapProcess, llamaswap

from helpers import wait_until_sync

CONFIG = f"""logToStdout: both
models:
  m:
    cmd: {sys.executable} -m llamaswap.testing.fake_upstream --port ${{PORT}} --model m
    proxy: http://127.0.0.1:${{PORT}}
  comfyui_auto:
    cmd: {sys.executable} -m llamaswap.testing.fake_upstream --port ${{PORT}} --model comfy
    proxy: http://127.0.0.1:${{PORT}}
"""
BODY = b'{"model":"m","messages":[]}'
# What a desynchronised parser would take for a second request: it must never be forwarded.
SMUGGLED = b"GET /upstream/m/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module", params=SERVING_PATHS)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LlamaswapProcess]:
    path = tmp_path_factory.mktemp("edges")
    with llamaswap(path, CONFIG, fast_path=request.param) as proc:
        assert proc.chat("m").status == 200  # loaded: anything forwarded would show
        yield proc


def exchange(server: LlamaswapProcess, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read until the server closes; the status, headers and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


UPSTREAM_LINE = re.compile(r"^[A-Z]+ /\S* \d{3}$")  # the fake upstream's "GET /path 200"


def upstream_saw(server: LlamaswapProcess, marker: str) -> str:
    """The requests the upstream logged, once a marker request sent now has reached it."""
    assert server.call("GET", f"/upstream/m/{marker}").status == 200
    assert wait_until_sync(lambda: f"GET /{marker} 200" in server.log(), 5.0)
    return "\n".join(line for line in server.log().splitlines() if UPSTREAM_LINE.match(line))


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: x", *headers, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    "target",
    [
        "/upstream/m/../../x",
        "/upstream/m/a/../../../etc/passwd",
        "/upstream/m/%2e%2e/%2E%2e/x",
        "/upstream/m/..%2fx",
        "/upstream/m/%252e%252e/x",
        "/upstream/m/..%5cx",
        "/upstream/m/./x",
        "/comfyui/../upstream/m/x",
    ],
)
def test_traversal_through_upstream_is_refused(server: LlamaswapProcess, target: str) -> None:
    status, _, body = exchange(server, request("GET", target))
    assert status == 400, body
    assert "'..' segments are not allowed" in json.loads(body)["error"]["message"]
    assert "comfyui_auto" not in server.running_models()
    saw = upstream_saw(server, "after-traversal")
    for line in saw.splitlines():
        assert not line.startswith("GET /..") and "%2e" not in line.lower(), line
        assert "passwd" not in line and "/./" not in line, line


def test_dotted_names_that_are_not_segments_pass(server: LlamaswapProcess) -> None:
    status, _, body = exchange(server, request("GET", "/upstream/m/a..b/.hidden/x."))
    assert status == 200
    assert body == b"GET /a..b/.hidden/x."


def test_json_sent_as_a_form_is_read_as_json(server: LlamaswapProcess) -> None:
    raw = request(
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/x-www-form-urlencoded",  # what `curl -d` sends
        f"Content-Length: {len(BODY)}",
        body=BODY,
    )
    status, _, body = exchange(server, raw)
    assert status == 200, body
    assert json.loads(body)["model"] == "m"


SMUGGLING = {
    "content-length and transfer-encoding": request(
        "POST",
        "/upstream/m/smuggle-clte",
        "Content-Length: 4",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n" + SMUGGLED,
    ),
    "transfer-encoding and content-length": request(
        "POST",
        "/upstream/m/smuggle-tecl",
        "Transfer-Encoding: chunked",
        f"Content-Length: {len(SMUGGLED) + 5}",
        body=b"0\r\n\r\n" + SMUGGLED,
    ),
    "two different content-lengths": request(
        "POST",
        "/upstream/m/smuggle-cl",
        "Content-Length: 0",
        f"Content-Length: {len(SMUGGLED)}",
        body=SMUGGLED,
    ),
    "two equal content-lengths": request(
        "POST",
        "/upstream/m/smuggle-cl2",
        f"Content-Length: {len(SMUGGLED)}",
        f"Content-Length: {len(SMUGGLED)}",
        body=SMUGGLED,
    ),
    "obs-fold": request(
        "POST",
        "/upstream/m/smuggle-fold",
        "X-Note: one",
        " Content-Length: 0",
        f"Content-Length: {len(SMUGGLED)}",
        body=SMUGGLED,
    ),
    "transfer-encoding not chunked last": request(
        "POST",
        "/upstream/m/smuggle-te",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: identity",
        body=b"0\r\n\r\n" + SMUGGLED,
    ),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_shapes_are_refused_and_never_forwarded(
    server: LlamaswapProcess, case: str
) -> None:
    status, headers, body = exchange(server, SMUGGLING[case])
    assert status == 400, body
    assert headers.get("Content-Type", "").startswith("application/json")
    assert json.loads(body)["error"]["message"].startswith("malformed HTTP request: ")
    saw = upstream_saw(server, "after-smuggling")
    assert "smuggle" not in saw, saw


def test_oversize_heads_get_431_and_414_and_the_server_carries_on(
    server: LlamaswapProcess,
) -> None:
    huge_field = request("GET", "/upstream/m/big", "X-Big: " + "a" * 40_000)
    status, _, body = exchange(server, huge_field)
    assert status == 431, body
    assert "header field longer than" in json.loads(body)["error"]["message"]
    many = request("GET", "/upstream/m/many", *(f"X-H{i}: v" for i in range(300)))
    status, _, body = exchange(server, many)
    assert status == 431, body
    assert "request header fields" in json.loads(body)["error"]["message"]
    long_url = request("GET", "/upstream/m/" + "u" * 20_000)
    status, _, body = exchange(server, long_url)
    assert status == 414, body
    # A large but acceptable header (a big cookie) is still read.
    status, _, _ = exchange(server, request("GET", "/v1/models", "Cookie: " + "c" * 20_000))
    assert status == 200
    saw = upstream_saw(server, "after-oversize")
    assert "/big" not in saw and "/many" not in saw and "uuuu" not in saw
    assert "Traceback" not in server.log()
