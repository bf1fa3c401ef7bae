"""The fake upstream's contract (spec §8.4 plus our extensions), against a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from helpers import FAKE_UPSTREAM, free_port, wait_until_sync
from llamaswap.testing.fake_upstream import parse_args, parse_duration


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def launch(port: int, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*FAKE_UPSTREAM, "-port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """One fake upstream for the whole module: (base URL, pid)."""
    port = free_port()
    proc = launch(port, "-model", "TheModel", "-respond", "howdy", "-silent")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_sync(lambda: healthy(base), 20), "fake upstream did not come up"
        yield base, proc.pid
    finally:
        finish(proc)


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        return r.status, dict(r.headers), await r.read()


def sse_data(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]


async def test_chat_completion_json(server: tuple[str, int]) -> None:
    base, pid = server
    payload = b'{"model":"x","messages":[]}'
    status, headers, body = await request(
        "POST",
        base + "/v1/chat/completions",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "howdy"}
    assert doc["responseMessage"] == "howdy"
    assert doc["h_content_length"] == str(len(payload))
    assert doc["request_body"] == payload.decode()
    assert doc["usage"] == {"completion_tokens": 10, "prompt_tokens": 25, "total_tokens": 35}
    assert doc["timings"]["predicted_n"] == 10
    assert doc["pid"] == pid and doc["model"] == "TheModel"


@pytest.mark.parametrize(("query", "body"), [("?stream=true", b"{}"), ("", b'{"stream": true}')])
async def test_chat_completion_stream(server: tuple[str, int], query: str, body: bytes) -> None:
    base, pid = server
    status, headers, raw = await request("POST", base + "/v1/chat/completions" + query, data=body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 11
    assert all(c["object"] == "chat.completion.chunk" and c["pid"] == pid for c in chunks)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "asdf" * 10
    assert chunks[-1]["usage"]["total_tokens"] == 35 and "timings" in chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_knobs(server: tuple[str, int]) -> None:
    base, _ = server
    _, _, raw = await request(
        "POST", base + "/v1/chat/completions?stream=true&chunks=3&chunk_delay=1", data=b"{}"
    )
    assert len(sse_data(raw)) == 3 + 2


async def test_completions_and_embeddings(server: tuple[str, int]) -> None:
    base, _ = server
    for path in ("/v1/completions", "/completion"):
        status, _, body = await request("POST", base + path, data=b"{}")
        doc = json.loads(body)
        assert status == 200 and doc["responseMessage"] == "howdy" and "usage" in doc
        assert doc["choices"][0]["text"] == "howdy"
    _, _, body = await request("POST", base + "/v1/embeddings", json={"input": ["a", "b"]})
    first = json.loads(body)
    _, _, body = await request("POST", base + "/v1/embeddings", json={"input": ["a", "b"]})
    assert json.loads(body)["data"] == first["data"]
    assert [d["index"] for d in first["data"]] == [0, 1]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]


async def test_audio_routes(server: tuple[str, int]) -> None:
    base, _ = server
    status, _, body = await request("POST", base + "/v1/audio/speech", json={"model": "TheModel"})
    assert status == 200 and json.loads(body)["message"] == "ok"
    status, _, body = await request("POST", base + "/v1/audio/speech", json={"model": "nope"})
    assert status == 400
    assert json.loads(body)["error"] == "Invalid model: nope, expected: TheModel"

    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", b"x" * 123, filename="a.wav", content_type="audio/wav")
    status, _, body = await request("POST", base + "/v1/audio/transcriptions", data=form)
    doc = json.loads(body)
    assert status == 200 and doc["text"] == "The length of the file is 123 bytes"
    assert doc["model"] == "whisper" and doc["h_content_type"].startswith("multipart/form-data")
    bad = aiohttp.FormData()
    bad.add_field("model", "whisper")
    bad.add_field("other", "x")
    status, _, _ = await request("POST", base + "/v1/audio/transcriptions", data=bad)
    assert status == 400

    status, _, body = await request("GET", base + "/v1/audio/voices?model=tts")
    assert status == 200 and json.loads(body)["voices"] == ["voice1"]
    assert json.loads(body)["model"] == "tts"


async def test_plain_routes(server: tuple[str, int]) -> None:
    base, _ = server
    assert (await request("GET", base + "/test"))[2] == b"howdy"
    assert json.loads((await request("GET", base + "/health"))[2])["status"] == "ok"
    assert (await request("GET", base + "/"))[2] == b"GET /"
    assert (await request("DELETE", base + "/some/where"))[2] == b"DELETE /some/where"
    _, _, body = await request("POST", base + "/sdapi/v1/txt2img", json={"model": "sd"})
    assert json.loads(body)["model"] == "sd" and json.loads(body)["images"] == []
    _, _, body = await request("GET", base + "/sdapi/v1/loras")
    assert json.loads(body)["loras"] == []


async def test_slow_respond_and_wait(server: tuple[str, int]) -> None:
    base, _ = server
    status, headers, body = await request("GET", base + "/slow-respond?echo=abc&delay=1ms")
    assert status == 200 and body == b"abc" and headers["Content-Type"].startswith("text/plain")
    assert (await request("GET", base + "/slow-respond?delay=bogus"))[0] == 400
    status, _, body = await request("GET", base + "/test?wait=20ms")
    assert status == 200 and body == b"howdy"


def test_env_route_and_flags() -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "FAKE_UPSTREAM_VAR": "visible"}
    proc = subprocess.Popen(
        [*FAKE_UPSTREAM, "--port", str(port), "--respond", "r"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_sync(lambda: healthy(base), 20)
        with urllib.request.urlopen(base + "/env") as resp:
            text = resp.read().decode()
        assert text.startswith("r") and "FAKE_UPSTREAM_VAR=visible" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # SIGTERM exits
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        proc.stdout.close()
    assert f"My PID: {proc.pid}" in out and "GET /env" in out


def test_startup_delay_and_ignore_sigterm() -> None:
    port = free_port()
    proc = launch(port, "-silent", "--startup-delay", "0.5", "-ignore-sig-term")
    base = f"http://127.0.0.1:{port}"
    try:

        def status() -> int:
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0

        assert wait_until_sync(lambda: status() != 0, 20)
        assert wait_until_sync(lambda: status() == 200, 5)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)  # ignored: still running
        assert healthy(base)
    finally:
        finish(proc)


def test_parse_args_and_durations() -> None:
    opts = parse_args(["-port", "1", "-model", "m", "--respond", "r", "-silent"])
    assert (opts.port, opts.model, opts.respond, opts.silent) == (1, "m", "r", True)
    assert parse_args([]).model == "TheExpectedModel" and parse_args([]).respond == "hi"
    assert parse_duration("1000ms") == pytest.approx(1.0)
    assert parse_duration("1m30s") == pytest.approx(90.0)
    assert parse_duration("250") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        parse_duration("soon")
