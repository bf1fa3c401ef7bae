"""Fuzzing the HTTP surface: no request gets a 500, a traceback or no answer; the server lives on.

One llamaswap (fake upstreams `a` and `b`, running side by side so no example waits for a
swap) serves the whole module from a thread of its own, and a second one has `apiKeys` set.
Requests are written as raw bytes on a socket, so nothing is normalised on the way: methods,
paths built from the real route table with odd suffixes, percent-encodings, dot segments,
unicode and great length; query strings; Content-Type variants (multipart with and without
a boundary), Accept variants, Authorization garbage, huge headers; bodies of random bytes,
JSON with a `model` of every JSON type, truncated JSON, garbage multipart and urlencoded
forms; sometimes malformed HTTP itself (a bad request line, broken chunking).

Every response must arrive within a deadline, have no 5xx but 502/503/504, carry no
traceback, be the JSON envelope when it is llamaswap's own error and JSON was asked for,
and the server must log no unhandled exception. Afterwards `/health` answers and a normal
chat completion still works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.server.api.api_errors import OLLAMA_PATHS, is_ollama_path

# Time for a whole answer (a model start on two busy cores included).
DEADLINE = 20.0
# Streams that never end by design: only their headers are awaited.
STREAM_PATHS = ("/logs/stream", "/api/events")
KEY = "sk-fuzz"

CONFIG = (
    fake_models_yaml(["a", "b"])
    + "    aliases: [bee]\n"
    + """
routing:
  router:
    settings:
      groups:
        g: {swap: false, exclusive: false, members: [a, b]}
profiles:
  p1: {pins: {pinned: a}}
"""
)
KEYED_CONFIG = f"apiKeys: [{KEY}]\n" + fake_models_yaml(["a"])


# --------------------------------------------------------------------------------------------
# Servers: each runs in its own thread and event loop for the whole module.


@dataclass
class Server:
    port: int
    errors: list[logging.LogRecord] = field(default_factory=list)


class _ErrorRecorder(logging.Handler):
    """Keeps every log record that carries an exception (an unhandled error while serving)."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        # aiohttp logs each request its HTTP parser refuses (and answers with a 400) this way.
        if record.exc_info and not (
            record.exc_info[0] and issubclass(record.exc_info[0], HttpProcessingError)
        ):
            self.into.append(record)


@pytest.fixture(scope="module", params=[False, True], ids=["aiohttp", "fast"])
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    fast_path: bool = request.param
    ready = threading.Event()
    found: list[Server] = []
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with (
            running_llamaswap(CONFIG, fast_path) as (base, _),
            running_llamaswap(KEYED_CONFIG, fast_path) as (keyed, _),
        ):
            found.extend(Server(int(url.rsplit(":", 1)[1])) for url in (base, keyed))
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="llamaswap-fuzz", daemon=True)
    thread.start()
    assert ready.wait(60), "llamaswap did not start"
    assert not failure, failure
    recorders = []
    for name in ("llamaswap", "aiohttp.server", "aiohttp.web", "asyncio"):
        recorder = _ErrorRecorder(found[0].errors)
        logging.getLogger(name).addHandler(recorder)
        recorders.append((name, recorder))
    try:
        yield found[0], found[1]
    finally:
        for name, recorder in recorders:
            logging.getLogger(name).removeHandler(recorder)
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not failure, failure


# --------------------------------------------------------------------------------------------
# A tiny HTTP/1.1 client on a raw socket.


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool  # False when only the headers were read (an endless stream)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return out + data
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def exchange(port: int, raw: bytes, stream_ok: bool) -> Response | None:
    """Send `raw`; read the answer until the server closes (or only the headers of a stream).

    None when the server closed without answering (what aiohttp may do with bytes that are
    not HTTP at all). A hang fails the test.
    """
    deadline = time.monotonic() + DEADLINE
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        # A server that answered early (and closed) breaks the pipe: read that answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        head: tuple[int, dict[str, str]] | None = None
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete answer within {DEADLINE}s: {data[:300]!r}"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise AssertionError(
                    f"no complete answer within {DEADLINE}s: {data[:300]!r}"
                ) from None
            if head is None and b"\r\n\r\n" in data + chunk:
                head = _head(data + chunk)
                endless = stream_ok and head[0] < 300 and "content-length" not in head[1]
                if endless or "event-stream" in head[1].get("content-type", ""):
                    return Response(*head, b"", complete=False)
            if not chunk:
                break
            data += chunk
    if not data:
        return None
    status, headers = _head(data)
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return Response(status, headers, body, complete=True)


def _head(data: bytes) -> tuple[int, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


# --------------------------------------------------------------------------------------------
# Requests.


def mostly(common: Any, others: list[Any]) -> st.SearchStrategy[Any]:
    """`common` about half the time, else any of `others`: most requests stay well-formed
    enough to reach a handler (and a model), the rest probe the edges."""
    return st.one_of(st.just(common), st.sampled_from(others))


MODELS = ["a", "b", "bee", "pinned", "nope", "", "a/b", "é", "%2F", "..", "a%00"]
ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/rerank",
    "/infill",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/audio/transcriptions",
    "/v1/images/generations",
    "/v1/images/edits",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/loras",
    "/audioapi/v1/tasks/run",
    "/v/chat/completions",
    "/props",
    "/v1/models",
    "/models",
    "/running",
    "/health",
    "/wol-health",
    "/unload",
    "/api/models/unload",
    "/api/models/unload/{m}",
    "/api/version",
    "/api/inflight",
    "/api/inflight/{m}/cancel",
    "/api/inflight/1/cancel",
    "/api/profiles",
    "/api/profiles/active",
    "/api/metrics/activity",
    "/api/metrics/stats",
    "/api/captures/{m}",
    "/api/captures/1",
    *sorted(OLLAMA_PATHS),
    "/api/blobs/{m}",
    "/models/load",
    "/models/unload",
    "/v1/models/{m}",
    "/logs",
    "/logs/stream",
    "/logs/stream/{m}",
    "/api/events",
    "/metrics",
    "/upstream",
    "/upstream/{m}",
    "/upstream/{m}/health",
    "/upstream/{m}/v1/chat/completions",
    "/upstream/{m}/x.js",
    "/comfyui",
    "/comfyui/{m}",
    "/",
    "/ui",
    "/ui/",
    "/ui/{m}",
    "/ui/app.js",
    "/favicon.ico",
    "/nope",
]
MODEL_ROUTES = [r for r in ROUTES[:16] if "{" not in r]
SUFFIXES = [
    "",
    "/",
    "//",
    "/x",
    "/..",
    "/../..",
    "/%2e%2e/%2e%2e",
    "/./.",
    "%00",
    "%",
    "%zz",
    "%ff%fe",
    "%C3%A9",
    "é",
    "\U0001f600",
    ";x=1",
    "#frag",
    "?",
]
QUERY_BITS = [
    "model=a",
    "model=b",
    "model=",
    "model=%00",
    "model=nope",
    "model=a&model=b",
    "stream=true",
    "limit=-1",
    "limit=99999999999999999999",
    "page=0",
    "sort=x",
    "order=sideways",
    "start=not-a-time",
    "no_history",
    "a=%",
    "=",
    "&&",
    "x=é",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get", "FOO", "CONNECT"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=latin-1",
    "application/json; charset=nope",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    "multipart/form-data; boundary=XyZ",
    "multipart/form-data; boundary=" + "b" * 300,
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-16",
    "text/plain",
    "application/octet-stream",
    "image/png",
    ";;;",
    "\x7f/\x01",
]
ACCEPTS = [
    None,
    "application/json",
    "text/plain",
    "text/html",
    "*/*",
    "text/event-stream",
    "application/json, text/plain",
    "garbage;q=x",
]
AUTHS = [
    None,
    f"Bearer {KEY}",
    "Bearer",
    "Bearer wrong",
    "Basic !!!",
    "Basic " + base64.b64encode(b"u:" + KEY.encode()).decode(),
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
    "Digest x",
    "",
    "B" * 9000,
]

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
models = mostly("a", MODELS) | json_values


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {"model": draw(models)}
    if draw(st.booleans()):
        body["messages"] = draw(
            st.sampled_from([[{"role": "user", "content": "hi"}], [], "x", None])
        )
    body.update(draw(st.dictionaries(st.sampled_from(["stream", "input", "x", "n"]), json_values)))
    raw = json.dumps(draw(st.sampled_from([body, [body], body["model"]]))).encode()
    cut = draw(st.sampled_from([None, None, None, 1, len(raw) // 2, -1]))
    return raw if cut is None else raw[:cut]


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["model", "file", "", 'm"x', "é"]))
        value = draw(st.sampled_from([b"a", b"nope", b"", b"\xff\x00", b"--XyZ", b"x" * 100]))
        disposition = draw(
            st.sampled_from(
                [
                    f'form-data; name="{name}"',
                    f'form-data; name="{name}"; filename="f.wav"',
                    "form-data",
                    "garbage",
                    "",
                ]
            )
        )
        parts.append(b"--XyZ\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value)
    end = draw(st.sampled_from([b"\r\n--XyZ--\r\n", b"", b"\r\n--XyZ", b"\r\n--Other--"]))
    return b"\r\n".join(parts) + end


bodies = st.one_of(
    json_bodies(),
    json_bodies(),
    st.just(b""),
    st.binary(max_size=200),
    json_bodies(),
    multipart_bodies(),
    st.lists(st.sampled_from(QUERY_BITS), max_size=4).map(lambda q: "&".join(q).encode()),
    st.text(max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@dataclass
class Request:
    raw: bytes
    method: str
    path: str
    accept: str | None
    malformed: bool  # not valid HTTP, or past aiohttp's own limits: its parser answers


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogatepass")


@st.composite
def requests(draw: st.DrawFn) -> Request:
    model = draw(mostly("a", MODELS))
    route = draw(st.sampled_from(MODEL_ROUTES) | st.sampled_from(ROUTES))
    path = route.replace("{m}", model) + draw(mostly("", SUFFIXES))
    if draw(st.integers(0, 15)) == 0:
        path += "/" + "a" * draw(st.sampled_from([300, 5000, 9000]))
    query = "&".join(draw(st.lists(st.sampled_from(QUERY_BITS), max_size=2)))
    target = path + (f"?{query}" if query else "")
    method = draw(mostly("POST", METHODS))
    content_type = draw(mostly("application/json", CONTENT_TYPES))
    accept = draw(st.sampled_from(ACCEPTS))
    auth = draw(mostly(None, AUTHS))
    body = draw(bodies)
    framing = draw(mostly("length", ["chunked", "short", "bad-chunk", "bad-line"]))
    extra = draw(
        mostly(
            None,
            [
                ("X-Api-Key", KEY),
                ("X-Api-Key", ""),
                ("X-Big", "x" * 9000),
                ("Origin", "http://e"),
                ("Bad Header", "x"),
            ],
        )
    )

    head = f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "surrogatepass")
    head += b"Host: 127.0.0.1\r\nConnection: close\r\n"
    for name, value in (
        ("Content-Type", content_type),
        ("Accept", accept),
        ("Authorization", auth),
    ):
        if value is not None:
            head += _header(name, value)
    if extra is not None:
        head += _header(*extra)
    malformed = (
        len(target) > 8000
        or (auth is not None and len(auth) > 8000)
        or (extra is not None and (len(extra[1]) > 8000 or " " in extra[0]))
        or any(c in (content_type or "") for c in "\x7f\x01")
        or method in ("get", "FOO", "CONNECT")
        or "#" in target
        or any(ord(c) > 127 for c in target)
    )
    if framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n"
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    elif framing == "bad-chunk":
        head += b"Transfer-Encoding: chunked\r\n"
        payload, malformed = b"zz\r\n" + body + b"\r\n0\r\n\r\n", True
    elif framing == "short":  # Content-Length below the body: the rest is a second request
        head += f"Content-Length: {len(body) // 2}\r\n".encode()
        payload, malformed = body, True
    elif framing == "bad-line":
        head = b"\x00\x01 / HTTP/9.9\r\n" + head
        payload, malformed = body, True
    else:
        head += f"Content-Length: {len(body)}\r\n".encode()
        payload = body
    return Request(head + b"\r\n" + payload, method, path, accept, malformed)


# --------------------------------------------------------------------------------------------
# The checks.

# 502/503/504 are how an upstream failing is reported (a fake upstream answering garbage with
# a broken response, a model that cannot start or is shutting down, an upstream timeout):
# legitimate answers to requests that reach a model, never a bug of llamaswap's own.
UPSTREAM_STATUSES = (502, 503, 504)


def check(server: Server, request: Request) -> None:
    stream_ok = any(request.path.startswith(p) for p in STREAM_PATHS)
    response = exchange(server.port, request.raw, stream_ok)
    errors = list(server.errors)
    server.errors.clear()
    assert not errors, [logging.Formatter().format(r) for r in errors]
    event("no answer" if response is None else f"status {response.status}")
    if response is None:
        assert request.malformed, "a well-formed request got no answer"
        return
    assert response.status < 500 or response.status in UPSTREAM_STATUSES, response
    assert b"Traceback" not in response.body, response
    if request.method == "HEAD" or response.status < 400 or request.malformed:
        return  # no body, no error, or aiohttp's parser answered (plain text, before any route)
    accept = (request.accept or "").lower()
    if "text/plain" in accept or "text/html" in accept:
        return
    forwarded = request.path.startswith(("/upstream/", "/comfyui/", "/v"))
    if forwarded and not response.headers.get("content-type", "").startswith("application/json"):
        return  # an upstream's own error, passed through as it is
    assert response.complete
    payload = json.loads(response.body)
    if is_ollama_path(request.path.split("?")[0]):
        assert isinstance(payload, dict) and isinstance(payload["error"], str), payload
        return  # Ollama's error shape
    if forwarded and not (isinstance(payload, dict) and "src" in payload):
        return  # an upstream's own JSON error
    assert payload["src"] == "llama-swap", payload
    assert isinstance(payload["error"]["message"], str), payload


def fuzz(max_examples: int) -> settings:
    # Each example is bounded by DEADLINE in `exchange`; hypothesis' own deadline would turn
    # a model start on a loaded machine into a flaky failure.
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(500)
@given(request=requests())
def test_fuzz_requests(servers: tuple[Server, Server], request: Request) -> None:
    check(servers[0], request)


@fuzz(150)
@given(request=requests())
def test_fuzz_requests_with_api_keys(servers: tuple[Server, Server], request: Request) -> None:
    check(servers[1], request)


def test_still_serving_after_fuzzing(servers: tuple[Server, Server]) -> None:
    plain, keyed = servers
    chat = json.dumps({"model": "a", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for server, auth in ((plain, b""), (keyed, f"Authorization: Bearer {KEY}\r\n".encode())):
        health = exchange(
            server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False
        )
        assert health is not None and health.status == 200
        raw = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + auth
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(chat)}\r\n\r\n".encode()
            + chat
        )
        response = exchange(server.port, raw, False)
        assert response is not None and response.status == 200, response
        assert json.loads(response.body)["model"] == "a"
