"""The `sendLoadingState` stream: progress shown to a chat client while its model loads.

While a streaming chat request waits for its model, the client already gets a 200 SSE
response whose events carry progress in `delta.reasoning_content` (a header line, a dot per
tick, queue position changes, then `Done! (<s>s)`), so chat UIs show a "thinking" area
instead of a spinner that may time out. The upstream's own stream then follows on the same
response. One writer task owns the response, so ticks and queue updates never interleave.

Long loads are easier to sit through with something to read: a light remark is streamed on
the first tick and then every 5–9 s, typed out at about 75 characters a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import orjson
from aiohttp import web

SEPARATOR = "━━━━━"
TICK_S = 0.75
REMARK_GAP_S = (5.0, 9.0)
REMARK_CHARS_PER_S = 75.0
REMARK_CHUNK = 5  # characters per event while a remark is typed out

REMARKS = (
    "Reading a few billion numbers from disk, one careful byte at a time...",
    "Persuading the GPU that this model is worth the memory...",
    "Unpacking the weights and folding them neatly into VRAM...",
    "Counting attention heads; they keep moving...",
    "Asking the previous model to leave politely...",
    "Warming up the matrix multipliers...",
    "Tokenizer found; it insists on splitting this sentence oddly...",
    "Allocating the KV cache, one key and one value at a time...",
    "Loading vocabulary; some of these words are very long...",
    "Double-checking that every layer arrived...",
    "Quantized weights are small, but there are a lot of them...",
    "Almost there. Probably. The progress dots are optimistic...",
)


def reasoning_event(text: str) -> bytes:
    payload = {"choices": [{"index": 0, "delta": {"reasoning_content": text}}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def wants_loading_stream(path: str, stream: bool, enabled: bool, model_ready: bool) -> bool:
    """llama-swap's condition: enabled, a streaming chat request, model not ready yet."""
    return enabled and stream and path.startswith("/v1/chat/completions") and not model_ready


class LoadingStream:
    """Owns the SSE response while the model loads. Use `async with`, then `finish()`."""

    def __init__(
        self, request: web.Request, model_id: str, rng: random.Random | None = None
    ) -> None:
        self._request = request
        self._model_id = model_id
        self._rng = rng or random.Random()
        self._remarks = list(REMARKS)
        self._rng.shuffle(self._remarks)
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
            },
        )

    async def __aenter__(self) -> LoadingStream:
        await self.response.prepare(self._request)
        await self.response.write(reasoning_event(f"{SEPARATOR}\n"))
        await self.response.write(reasoning_event(f"llamaswap loading model: {self._model_id}\n"))
        self._writer = asyncio.create_task(self._write_progress())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_writer()

    def queue_position(self, position: int) -> None:
        """Called synchronously by the router when the request's place in the queue changes."""
        self._lines.put_nowait(f"\nQueue position: #{position}\n")

    async def finish(self) -> None:
        """The model is ready: close the progress block; the upstream stream follows."""
        await self._stop_writer()
        seconds = time.monotonic() - self._started
        await self.response.write(reasoning_event(f"\nDone! ({seconds:.2f}s)\n"))
        await self.response.write(reasoning_event(f"{SEPARATOR}\n \n"))

    async def fail(self, error_json: bytes) -> None:
        """The model did not start: write the error envelope into the stream and end it."""
        await self._stop_writer()
        await self.response.write(b"data: " + error_json + b"\n\n")
        await self.response.write_eof()

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._writer
            self._writer = None

    async def _write_progress(self) -> None:
        """Dots every tick; queue updates as they come; remarks typed out in small chunks
        (dots pause while one is being typed)."""
        now = time.monotonic()
        next_tick = now + TICK_S
        next_remark = next_tick  # the first remark comes with the first tick
        typing = ""  # the rest of the remark being typed out
        next_chunk = float("inf")
        try:
            while True:
                timeout = max(0.0, min(next_tick, next_chunk) - time.monotonic())
                try:
                    line = await asyncio.wait_for(self._lines.get(), timeout)
                except TimeoutError:
                    pass
                else:
                    await self.response.write(reasoning_event(line))
                    continue
                now = time.monotonic()
                if typing and now >= next_chunk:
                    chunk, typing = typing[:REMARK_CHUNK], typing[REMARK_CHUNK:]
                    await self.response.write(reasoning_event(chunk if typing else chunk + " "))
                    next_chunk = now + REMARK_CHUNK / REMARK_CHARS_PER_S if typing else float("inf")
                if now >= next_tick:
                    next_tick = now + TICK_S
                    if not typing and now >= next_remark:
                        typing = "\n" + self._next_remark()
                        next_chunk = now
                        next_remark = now + self._rng.uniform(*REMARK_GAP_S)
                    elif not typing:
                        await self.response.write(reasoning_event("."))
        except ConnectionError:
            return  # the client left; the handler's cancellation does the rest

    def _next_remark(self) -> str:
        remark = self._remarks.pop(0)
        self._remarks.append(remark)
        return remark
