"""A fake OpenAI-compatible upstream server: `python -m llamaswap.testing.fake_upstream`.

It reproduces llama-swap's `simple-responder` contract (spec §8.4) so tests and demos can
run real child processes without a model. Extras over the Go helper:

* `--startup-delay SECONDS`: `/health` answers 503 until that long after start.
* `--fork-child`: spawn a child process that sleeps forever (to test process-group kill);
  its pid is printed as `Child PID: <pid>`.
* `--sse-event`: prefix stream chunks with `event:message` like the Go helper does (off by
  default because OpenAI clients treat named events specially).
* every JSON answer carries `"pid"`; answers without a model of their own carry `"model"`
  (the `--model` flag).
* chat completions stream when `?stream=true` *or* the JSON body has `"stream": true`;
  chunks are `chat.completion.chunk` objects; `?chunks=N` and `?chunk_delay=<ms>` shape them.
* `?wait=<duration>` (Go syntax such as `250ms`, or bare milliseconds) delays any route.
* `?fail=<status>` makes any route answer that status with an OpenAI error body
  (`{"error": {"message": "fake failure <status>"}}`).
* `?compress=1` compresses a JSON or streamed answer as the request's `Accept-Encoding`
  allows (aiohttp's choice) and reports the header it got in `X-Fake-Accept-Encoding`.
* `/v1/embeddings` returns small deterministic vectors; `/headers` answers the request headers
  as JSON; unknown routes echo `<METHOD> <path>`.
* `/ws` (a websocket upgrade; a plain GET is echoed like any unknown route) first sends
  `{"model", "pid", "protocol", "query", "host"}` as text, then echoes text and binary messages;
  the text `close <code>` makes it close the socket with that code.
* `/v1/audio/speech` with `"response_format": "wav"` answers a short WAV tone (`audio/wav`);
  without it, the Go helper's `{"message": "ok"}`.
* `--memory SPEC`: "use" GPU memory, reported by the fake `nvidia-smi`
  (`llamaswap.testing.fake_gpu`, state file from `$LLAMASWAP_FAKE_GPU_STATE`) for this pid
  until exit: `MiB` on the first visible device, or `i:MiB,j:MiB` per visible device
  (`CUDA_VISIBLE_DEVICES` maps visible to physical indices, as CUDA does).
* vLLM's sleep mode: `POST /sleep?level=N` frees the memory, `POST /wake_up` takes it back,
  `GET /is_sleeping` answers `{"is_sleeping": bool}`; each change takes `--sleep-delay`
  seconds. While asleep `/v1/...` answers 503. `--wake-growth MiB`: each wake takes back that
  much more on each device than it held before (a runtime that grows its cache on wake).
* `/v1/rerank` (and `/rerank`, `/v1/reranking`, `/reranking`) scores each document by the
  share of the query's words it contains, llama.cpp style (`results: [{index,
  relevance_score}]`, best first).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import os
import re
import signal
import sys
import time
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from llamaswap.testing import fake_anthropic, fake_gpu

__all__ = ["Options", "build_app", "main", "parse_args", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SLOW_ECHO_DEFAULT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_USAGE = {"completion_tokens": 10, "prompt_tokens": 25, "total_tokens": 35}
_TIMINGS = {
    "prompt_n": 25,
    "prompt_ms": 13,
    "predicted_n": 10,
    "predicted_ms": 17,
    "predicted_per_second": 10,
}


def parse_duration(text: str) -> float:
    """Parse a Go duration (`1h2m`, `250ms`, `1.5s`) or bare milliseconds into seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d*)?", text):
        return float(text) / 1000.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


@dataclass(frozen=True)
class Options:
    """Command-line options of the fake upstream."""

    port: int = 8080
    model: str = "TheExpectedModel"
    respond: str = "hi"
    silent: bool = False
    ignore_sig_term: bool = False
    startup_delay: float = 0.0
    fork_child: bool = False
    sse_event: bool = False
    memory: dict[int, int] | None = None
    sleep_delay: float = 0.0
    wake_growth: int = 0


def parse_args(argv: Sequence[str]) -> Options:
    """Parse flags; both `--flag` and Go's single-dash `-flag` spellings are accepted."""
    p = argparse.ArgumentParser(prog="fake_upstream", allow_abbrev=False)
    p.add_argument("--port", "-port", type=int, default=8080)
    p.add_argument("--model", "-model", default="TheExpectedModel")
    p.add_argument("--respond", "-respond", default="hi")
    p.add_argument("--silent", "-silent", action="store_true")
    p.add_argument("--ignore-sig-term", "-ignore-sig-term", action="store_true")
    p.add_argument("--startup-delay", "-startup-delay", type=float, default=0.0)
    p.add_argument("--fork-child", "-fork-child", action="store_true")
    p.add_argument("--sse-event", "-sse-event", action="store_true")
    p.add_argument("--memory", "-memory", default="")
    p.add_argument("--sleep-delay", "-sleep-delay", type=float, default=0.0)
    p.add_argument("--wake-growth", "-wake-growth", type=int, default=0)
    ns = p.parse_args(list(argv))
    try:
        memory = (
            parse_memory(ns.memory, os.environ.get("CUDA_VISIBLE_DEVICES")) if ns.memory else None
        )
    except ValueError as exc:
        p.error(str(exc))
    return Options(
        port=ns.port,
        model=ns.model,
        respond=ns.respond,
        silent=ns.silent,
        ignore_sig_term=ns.ignore_sig_term,
        startup_delay=ns.startup_delay,
        fork_child=ns.fork_child,
        sse_event=ns.sse_event,
        memory=memory,
        sleep_delay=ns.sleep_delay,
        wake_growth=ns.wake_growth,
    )


def _tracked_memory(opts: Options) -> dict[int, int] | None:
    """The `--memory` usage to report, or None without a fake GPU to report it to."""
    return opts.memory if opts.memory and os.environ.get(fake_gpu.STATE_ENV) else None


def parse_memory(spec: str, visible: str | None) -> dict[int, int]:
    """`--memory` as physical GPU index -> MiB: `8192` or `0:4096,1:2048` (visible indices)."""
    physical = [int(v) for v in visible.split(",") if v.strip().isdigit()] if visible else []
    usage: dict[int, int] = {}
    for part in spec.split(","):
        index, _, mib = part.rpartition(":")
        if not mib.strip().isdigit() or (index and not index.strip().isdigit()):
            raise ValueError(f"invalid --memory {spec!r}: expected MiB or i:MiB,j:MiB")
        i = int(index or 0)
        gpu = physical[i] if i < len(physical) else i
        usage[gpu] = usage.get(gpu, 0) + int(mib)
    return usage


def _tone_wav(seconds: float = 0.25, hz: float = 440.0, rate: int = 8000) -> bytes:
    """A short mono 16-bit sine tone as a WAV file."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        sample = int(8000 * math.sin(2 * math.pi * hz * i / rate))
        frames += sample.to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return out.getvalue()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Responder:
    """The route handlers, sharing the options and the start time."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.asleep = False
        self.memory = _tracked_memory(opts)
        self.sleep_lock = asyncio.Lock()

    def json(self, body: dict[str, Any], status: int = 200) -> web.Response:
        body.setdefault("pid", self.pid)
        body.setdefault("model", self.opts.model)
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")

    # -- middleware ---------------------------------------------------------------------
    @web.middleware
    async def wait_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = request.query.get("wait")
        if wait:
            try:
                await asyncio.sleep(parse_duration(wait))
            except ValueError:
                return self.json({"error": f"invalid wait duration: {wait}"}, status=400)
        return await handler(request)

    @web.middleware
    async def shape_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fail = request.query.get("fail")
        if fail and fail.isdigit():
            await request.read()
            error = {"message": f"fake failure {fail}", "type": "server_error"}
            return self.json({"error": error}, status=int(fail))
        response = await handler(request)
        if request.query.get("compress") and isinstance(response, web.Response):
            _compress(request, response)
        return response

    @web.middleware
    async def log_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        print(f"{request.method} {request.path_qs} {response.status}", flush=True)
        return response

    @web.middleware
    async def sleep_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.asleep and request.path.startswith("/v1/"):
            await request.read()
            error = {"message": "model is sleeping", "type": "server_error"}
            return self.json({"error": error}, status=503)
        return await handler(request)

    # -- vLLM sleep mode ----------------------------------------------------------------
    async def _set_asleep(self, asleep: bool) -> None:
        async with self.sleep_lock:
            if self.asleep == asleep:
                return
            await asyncio.sleep(self.opts.sleep_delay)  # the time the weights take to move
            self.asleep = asleep
            if self.memory:
                if asleep:
                    fake_gpu.unregister(self.pid)
                else:
                    grown = {i: mib + self.opts.wake_growth for i, mib in self.memory.items()}
                    self.memory = grown
                    fake_gpu.register(self.pid, grown)

    async def sleep(self, request: web.Request) -> web.StreamResponse:
        await self._set_asleep(True)
        return web.Response(status=200)

    async def wake_up(self, request: web.Request) -> web.StreamResponse:
        await self._set_asleep(False)
        return web.Response(status=200)

    async def is_sleeping(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"is_sleeping": self.asleep})

    # -- OpenAI routes ------------------------------------------------------------------
    async def _read_json(self, request: web.Request) -> tuple[bytes, dict[str, Any]]:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return raw, parsed if isinstance(parsed, dict) else {}

    def _wants_stream(self, request: web.Request, body: dict[str, Any]) -> bool:
        return request.query.get("stream") == "true" or body.get("stream") is True

    async def _stream(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            count = int(request.query.get("chunks", "10"))
            delay = float(request.query.get("chunk_delay", "0")) / 1000.0
        except ValueError:
            return self.json({"error": "invalid chunks or chunk_delay"}, status=400)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        if request.query.get("compress"):
            _compress(request, resp)
        await resp.prepare(request)
        prefix = b"event:message\n" if self.opts.sse_event else b""
        created = int(time.time())
        ident = f"chatcmpl-{self.pid}-{created}"

        def chunk(extra: dict[str, Any], choice: dict[str, Any] | None) -> bytes:
            obj: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": self.opts.model,
                "pid": self.pid,
                "choices": [choice] if choice is not None else [],
            }
            obj.update(extra)
            return prefix + b"data: " + json.dumps(obj).encode() + b"\n\n"

        def content(text: str) -> dict[str, Any]:
            if kind == "text_completion":
                return {"index": 0, "text": text, "finish_reason": None}
            return {"index": 0, "delta": {"content": text}, "finish_reason": None}

        for i in range(count):
            if delay and i:
                await asyncio.sleep(delay)
            await resp.write(chunk({}, content("asdf")))
        final = content("")
        final["finish_reason"] = "stop"
        await resp.write(chunk({"usage": _USAGE, "timings": _TIMINGS}, final))
        await resp.write(prefix + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw, body = await self._read_json(request)
        if self._wants_stream(request, body):
            return await self._stream(request, "chat.completion.chunk")
        message = {"role": "assistant", "content": self.opts.respond}
        return self.json(
            {
                "id": f"chatcmpl-{self.pid}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.opts.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": _USAGE,
                "timings": _TIMINGS,
                "responseMessage": self.opts.respond,
                "h_content_length": request.headers.get("Content-Length", ""),
                "request_body": raw.decode("utf-8", "replace"),
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        raw, body = await self._read_json(request)
        if self._wants_stream(request, body):
            return await self._stream(request, "text_completion")
        return self.json(
            {
                "id": f"cmpl-{self.pid}",
                "object": "text_completion",
                "created": int(time.time()),
                "choices": [{"index": 0, "text": self.opts.respond, "finish_reason": "stop"}],
                "responseMessage": self.opts.respond,
                "usage": _USAGE,
                "request_body": raw.decode("utf-8", "replace"),
            }
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        _, body = await self._read_json(request)
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs]
        data = []
        for index, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            vector = [round(b / 255.0, 6) for b in digest[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        return self.json(
            {
                "object": "list",
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def speech(self, request: web.Request) -> web.StreamResponse:
        _, body = await self._read_json(request)
        got = body.get("model")
        if got != self.opts.model:
            return self.json(
                {"error": f"Invalid model: {got}, expected: {self.opts.model}"}, status=400
            )
        if body.get("response_format") == "wav":
            return web.Response(body=_tone_wav(), content_type="audio/wav")
        return self.json({"message": "ok"})

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        _, body = await self._read_json(request)
        words = set(str(body.get("query", "")).lower().split())
        documents = body.get("documents") or []
        results = []
        for index, doc in enumerate(documents if isinstance(documents, list) else []):
            doc_words = set(str(doc).lower().split())
            score = len(words & doc_words) / len(words) if words else 0.0
            results.append({"index": index, "relevance_score": round(score, 6)})
        results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
        tokens = len(words) + sum(len(str(d).split()) for d in documents)
        return self.json({"object": "list", "results": results, "usage": {"prompt_tokens": tokens}})

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await request.post()
        except ValueError as exc:
            return self.json({"error": f"invalid multipart form: {exc}"}, status=400)
        model = form.get("model")
        upload = form.get("file")
        if not isinstance(model, str) or not model:
            return self.json({"error": "missing model field"}, status=400)
        if not isinstance(upload, web.FileField):
            return self.json({"error": "missing file field"}, status=400)
        size = len(upload.file.read())
        return self.json(
            {
                "text": f"The length of the file is {size} bytes",
                "model": model,
                "h_content_type": request.headers.get("Content-Type", ""),
                "h_content_length": request.headers.get("Content-Length", ""),
            }
        )

    async def voices(self, request: web.Request) -> web.StreamResponse:
        return self.json({"voices": ["voice1"], "model": request.query.get("model", "")})

    # -- plain routes -------------------------------------------------------------------
    async def slow_respond(self, request: web.Request) -> web.StreamResponse:
        echo = request.query.get("echo") or _SLOW_ECHO_DEFAULT
        try:
            delay = parse_duration(request.query.get("delay", "100ms"))
        except ValueError:
            return web.Response(status=400, text="invalid delay duration")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for i, char in enumerate(echo):
            if i:
                await asyncio.sleep(delay)
            await resp.write(char.encode())
        await resp.write_eof()
        return resp

    async def test(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=self.opts.respond)

    async def env(self, request: web.Request) -> web.StreamResponse:
        lines = "\n".join(f"{k}={v}" for k, v in os.environ.items())
        return web.Response(text=f"{self.opts.respond}\n{lines}")

    async def health(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() - self.started < self.opts.startup_delay:
            return self.json({"status": "loading"}, status=503)
        return self.json({"status": "ok"})

    async def sdapi_image(self, request: web.Request) -> web.StreamResponse:
        _, body = await self._read_json(request)
        return self.json({"model": body.get("model", ""), "images": []})

    async def sdapi_loras(self, request: web.Request) -> web.StreamResponse:
        return self.json({"loras": []})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("chat", "superchat"), max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return await self.echo(request)
        await ws.prepare(request)
        hello = {
            "model": self.opts.model,
            "pid": self.pid,
            "protocol": ws.ws_protocol,
            "query": request.query_string,
            "host": request.host,
        }
        await ws.send_str(json.dumps(hello))
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data.startswith("close "):
                await ws.close(code=int(msg.data.split()[1]), message=b"bye")
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def headers(self, request: web.Request) -> web.StreamResponse:
        """The request's headers as a JSON object (what the proxy forwarded)."""
        return web.json_response(dict(request.headers))

    async def echo(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(text=f"{request.method} {request.path}")


def _compress(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Fake-Accept-Encoding"] = request.headers.get("Accept-Encoding", "")
    response.enable_compression()


def build_app(opts: Options) -> web.Application:
    """Build the aiohttp application for `opts` (the whole route table is here)."""
    r = _Responder(opts)
    middlewares = [r.wait_middleware, r.sleep_middleware, r.shape_middleware]
    if not opts.silent:
        middlewares.insert(0, r.log_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", r.chat_completions)
    app.router.add_post("/v1/completions", r.completions)
    app.router.add_post(
        "/v1/messages", lambda req: fake_anthropic.messages(req, opts.model, opts.respond)
    )
    app.router.add_post("/completion", r.completions)
    app.router.add_post("/v1/embeddings", r.embeddings)
    app.router.add_post("/v1/audio/speech", r.speech)
    app.router.add_post("/v1/audio/transcriptions", r.transcriptions)
    app.router.add_get("/v1/audio/voices", r.voices)
    for path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking"):
        app.router.add_post(path, r.rerank)
    app.router.add_get("/slow-respond", r.slow_respond)
    app.router.add_get("/test", r.test)
    app.router.add_route("*", "/headers", r.headers)
    app.router.add_get("/env", r.env)
    app.router.add_get("/health", r.health)
    app.router.add_get("/ws", r.websocket)
    app.router.add_post("/sdapi/v1/txt2img", r.sdapi_image)
    app.router.add_post("/sdapi/v1/img2img", r.sdapi_image)
    app.router.add_get("/sdapi/v1/loras", r.sdapi_loras)
    app.router.add_post("/sleep", r.sleep)
    app.router.add_post("/wake_up", r.wake_up)
    app.router.add_get("/is_sleeping", r.is_sleeping)
    app.router.add_route("*", "/{tail:.*}", r.echo)
    return app


async def _serve(opts: Options) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    interrupts = 0

    def on_sigterm() -> None:
        if opts.ignore_sig_term:
            print("SIGTERM received and ignored", flush=True)
        else:
            done.set()

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        print("SIGINT received" + ("; exiting" if interrupts > 1 else ""), flush=True)
        if interrupts > 1:
            done.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, on_sigint)

    child: asyncio.subprocess.Process | None = None
    if opts.fork_child:
        # Stays in our process group and inherits our stdout, like a wrapper's grandchild.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(1e9)"
        )
        print(f"Child PID: {child.pid}", flush=True)

    # A stopped upstream should exit promptly even with a stream open, like a real server
    # that drops its connections on SIGTERM; aiohttp would otherwise drain for 60 s.
    memory = _tracked_memory(opts)
    if opts.memory and not memory and not opts.silent:
        print(f"--memory ignored: {fake_gpu.STATE_ENV} is not set (no fake GPU)", flush=True)
    if memory:
        # Registered before listening: a real server holds its memory before it is healthy.
        fake_gpu.register(os.getpid(), memory)
    runner = web.AppRunner(
        build_app(opts), access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", opts.port, reuse_address=True)
    await site.start()
    if not opts.silent:
        server = site._server  # the bound port is only known to the server object
        port = server.sockets[0].getsockname()[1] if isinstance(server, asyncio.Server) else 0
        print(f"My PID: {os.getpid()}", flush=True)
        print(f"Listening on 127.0.0.1:{port}", flush=True)
    try:
        await done.wait()
    finally:
        await runner.cleanup()
        if memory:
            fake_gpu.unregister(os.getpid())
        if child is not None:
            child.kill()
            await child.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake upstream until SIGTERM (or a second SIGINT)."""
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(_serve(opts))


if __name__ == "__main__":
    main()
