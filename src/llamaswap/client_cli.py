"""The commands that talk to a running llamaswap: `ps`, `load`, `unload`, `run`, `logs`,
and `drain` / `undrain` for a cluster's ingress.

Blocking stdlib `http.client`: a command waits on one answer at a time, and the CLI gains
no dependency. Every failure is a `ClientError` with a one-line message (no server answers,
the key is refused, the model is unknown); `cli.py` prints it and exits 1. The API key is
sent as `Authorization: Bearer` and appears in no message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from llamaswap import __version__
from llamaswap.errors import ClientError

DEFAULT_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT = 10.0
# Answers that need no model start; loads, chats and followed logs wait as long as they take.
READ_TIMEOUT = 30.0

Message = dict[str, str]


@dataclass(frozen=True)
class Server:
    """Where the running llamaswap is (`--url`) and the key it wants (`--api-key`)."""

    url: str = DEFAULT_URL
    api_key: str | None = field(default=None, repr=False)  # never shown, even in a traceback


def _connection(server: Server) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the server and the path prefix of its URL."""
    parts = urlsplit(server.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"--url must be http://HOST:PORT or https://HOST:PORT, not {server.url}")
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.netloc, timeout=CONNECT_TIMEOUT
        )
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=CONNECT_TIMEOUT)
    return conn, parts.path.rstrip("/")


def _headers(server: Server, body: bytes | None) -> dict[str, str]:
    headers = {"User-Agent": f"llamaswap-cli/{__version__}", "Accept": "*/*"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    return headers


@contextlib.contextmanager
def _request(
    server: Server,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    read_timeout: float | None = READ_TIMEOUT,
) -> Iterator[http.client.HTTPResponse]:
    """The server's answer, once its status is known to be a success (else ClientError).
    `read_timeout` None waits for as long as the server takes (a model load, a stream)."""
    conn, prefix = _connection(server)
    payload = None if body is None else json.dumps(body).encode()
    try:
        try:
            conn.connect()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ClientError(f"no llamaswap server answers at {server.url}: {reason}") from exc
        if conn.sock is not None:
            conn.sock.settimeout(read_timeout)
        try:
            conn.request(method, prefix + path, body=payload, headers=_headers(server, payload))
            response = conn.getresponse()
        except TimeoutError as exc:
            raise ClientError(f"{server.url} did not answer within {read_timeout:.0f}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"{server.url} closed the connection: {exc}") from exc
        if response.status >= 400:
            raise ClientError(_error_line(server, response.status, response.read()))
        yield response
    finally:
        conn.close()


def _error_line(server: Server, status: int, body: bytes) -> str:
    """One line saying why the server refused."""
    if status == 401:
        if server.api_key:
            return f"{server.url} refused the API key (401)"
        return f"{server.url} wants an API key (401): give --api-key or set LLAMASWAP_API_KEY"
    # A failed start's message carries the upstream's output: keep it on one line.
    return f"{server.url} answered {status}: {' '.join(error_message(body).split())}"


def error_message(body: bytes) -> str:
    """The message of an error answer: OpenAI's `{"error":{"message"}}`, Ollama's
    `{"error":"…"}`, or the text's first line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text.splitlines()[0] if text else "(no message)"
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return text


def _read_json(response: http.client.HTTPResponse) -> Any:
    try:
        return json.loads(response.read())
    except ValueError as exc:
        raise ClientError("the server's answer is not JSON: is --url a llamaswap?") from exc


# ---- ps, load, unload ----------------------------------------------------------------------


def running(server: Server) -> list[dict[str, Any]]:
    """`/running`'s entries: models starting, ready or stopping, and those backing off."""
    with _request(server, "GET", "/running") as response:
        doc = _read_json(response)
    entries = doc.get("running") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ClientError("the server's /running answer has no list: is --url a llamaswap?")
    return [e for e in entries if isinstance(e, dict)]


def load(server: Server, model: str) -> None:
    """Load `model` (a swap evicts what the config says) and return once it is ready."""
    with _request(server, "POST", "/models/load", {"model": model}, read_timeout=None) as r:
        r.read()


def unload(server: Server, model: str | None) -> None:
    """Stop `model` now, or every model (None)."""
    if model is None:
        with _request(server, "POST", "/api/models/unload") as response:
            response.read()
    else:
        with _request(server, "POST", "/models/unload", {"model": model}) as response:
            response.read()


def drain(server: Server, node: str, on: bool) -> None:
    """Drain a cluster's `node` for maintenance (`on`), or bring it back (docs/cluster.md)."""
    path = "/cluster/drain" if on else "/cluster/undrain"
    with _request(server, "POST", path, {"node": node}) as response:
        response.read()


# ---- run -----------------------------------------------------------------------------------


def chat(server: Server, model: str, messages: list[Message]) -> Iterator[str]:
    """The assistant's answer to `messages`, streamed piece by piece."""
    body = {"model": model, "messages": messages, "stream": True}
    with _request(server, "POST", "/v1/chat/completions", body, read_timeout=None) as response:
        if "text/event-stream" not in response.getheader("Content-Type", ""):
            # An upstream that ignores `stream` answers one JSON body.
            yield from _contents(_read_json(response), "message")
            return
        for data in _sse_data(response):
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                continue  # a keep-alive comment or a partial line: nothing to show
            yield from _contents(chunk, "delta")


def _sse_data(response: http.client.HTTPResponse) -> Iterator[str]:
    """The `data:` payloads of an event stream."""
    while line := response.readline():
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("data:"):
            yield text.removeprefix("data:").strip()


def _contents(doc: Any, key: str) -> Iterator[str]:
    if not isinstance(doc, dict):
        return
    if "error" in doc:
        raise ClientError(f"the model answered an error: {error_message(json.dumps(doc).encode())}")
    for choice in doc.get("choices") or []:
        part = choice.get(key) if isinstance(choice, dict) else None
        content = part.get("content") if isinstance(part, dict) else None
        if isinstance(content, str) and content:
            yield content


def answer(
    server: Server, model: str, messages: list[Message], write: Callable[[str], None]
) -> str:
    """Stream the answer to `messages` through `write` (ending the line); return its text."""
    pieces = []
    for piece in chat(server, model, messages):
        pieces.append(piece)
        write(piece)
    write("\n")
    return "".join(pieces)


def converse(
    server: Server,
    model: str,
    read_line: Callable[[], str],
    write: Callable[[str], None],
    prompt: str,
) -> None:
    """A chat, one user message per line read, keeping the history; ends at end of input
    or `/bye`. `prompt` is written before each read (empty when input is piped)."""
    history: list[Message] = []
    while True:
        write(prompt)
        line = read_line()
        if not line:
            return
        text = line.strip()
        if text == "/bye":
            return
        if not text:
            continue
        history.append({"role": "user", "content": text})
        reply = answer(server, model, history, write)
        history.append({"role": "assistant", "content": reply})


# ---- logs ----------------------------------------------------------------------------------


def logs(server: Server, model: str | None, follow: bool, write: Callable[[bytes], None]) -> None:
    """The server's log (`model`: that model's process output, or `proxy` / `upstream`),
    then with `follow` each new chunk until the server ends the stream."""
    path = "/logs/stream" + ("" if model is None else "/" + quote(model, safe="/"))
    if not follow:
        path = "/logs" if model is None else path + "?no-follow"
    with _request(server, "GET", path, read_timeout=None if follow else READ_TIMEOUT) as response:
        while chunk := response.read1(65536):
            write(chunk)


# ---- the ps table --------------------------------------------------------------------------

_COLUMNS = ("MODEL", "STATE", "PID", "UPTIME", "IDLE LEFT", "IN FLIGHT", "QUEUED", "LOAD TIME")


def ps_table(entries: list[dict[str, Any]]) -> str:
    """`/running` as a table like `ollama ps`; `-` where a value is not known. Entries from
    a cluster's ingress name their node: the table then starts with a NODE column."""
    rows = [_COLUMNS, *(_ps_row(e) for e in entries)]
    if any("node" in e for e in entries):
        nodes = [_node_cell(e) for e in entries]
        rows = [("NODE", *rows[0]), *((n, *r) for n, r in zip(nodes, rows[1:], strict=True))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _node_cell(entry: dict[str, Any]) -> str:
    node = str(entry.get("node", "-"))
    return f"{node} (draining)" if entry.get("nodeDraining") else node


def _ps_row(entry: dict[str, Any]) -> tuple[str, ...]:
    state = str(entry.get("state", "?"))
    backoff = entry.get("backoff")
    if isinstance(backoff, dict):
        state = f"backoff (retry in {duration(backoff.get('retryInS'))})"
    pid = entry.get("pid")
    idle_left = duration(entry.get("ttlLeftS"))
    if idle_left == "-" and state == "ready" and not entry.get("inFlight"):
        idle_left = "forever"  # idle, yet nothing will stop it: no ttl, or keep_alive < 0
    load_time = entry.get("loadTimeS")
    return (
        str(entry.get("model", "?")),
        state,
        str(pid) if isinstance(pid, int) else "-",
        duration(entry.get("uptimeS")),
        idle_left,
        str(entry.get("inFlight", 0)),
        str(entry.get("queued", 0)),
        f"{load_time:.1f}s" if isinstance(load_time, int | float) else "-",
    )


def duration(seconds: Any) -> str:
    """`42s`, `3m05s`, `2h07m`; `-` when unknown."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"
