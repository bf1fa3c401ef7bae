"""OpenAI API answers → Ollama API answers (pure: bytes in, bytes out; clocks are passed in).

A `Reply` is fed the upstream body chunk by chunk as it arrives and returns the bytes to send
the client; `finish()` is called once the upstream body ended and returns the rest.

* A streamed chat/completion (SSE) becomes NDJSON: one object per content/thinking delta
  (`done: false`), the tool calls in one object once complete, then a `done: true` object
  with `done_reason` (`stop`, `length`) and the counts and durations. An SSE `error` event, or
  a stream cut before its end, becomes an `{"error": …}` line (the status is already sent).
* A non-streamed answer becomes one JSON object.
* Durations are nanoseconds. `prompt_eval_*` / `eval_*` come from llama.cpp's `timings` when
  present; otherwise the time to the first token and from it to the end (streams) or the
  whole time (not streamed). `load_duration` is what remains of `total_duration` (waiting
  for the lease, a swap, the model's start); counts come from `usage`.
* An upstream error status (`>= 400`) becomes `{"error": "<message>"}` with that status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

__all__ = [
    "NDJSON",
    "CompletionBody",
    "CompletionStream",
    "EmbedBody",
    "ErrorBody",
    "Reply",
    "Shape",
    "error_line",
    "now_rfc3339",
]

NDJSON = "application/x-ndjson"
JSON = "application/json"
Shape = Literal["chat", "generate"]
Clock = Callable[[], int]  # monotonic nanoseconds


def now_rfc3339() -> str:
    """The current time as Ollama writes `created_at` (UTC, `Z`)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error_line(message: str) -> bytes:
    return orjson.dumps({"error": message}) + b"\n"


class Reply(Protocol):
    content_type: str

    def feed(self, data: bytes) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...


def error_message(body: bytes) -> str:
    """The message of an OpenAI-style (or any) error body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip() or "upstream error"
    if isinstance(doc, dict):
        err = doc.get("error", doc.get("message"))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str) and err:
            return err
    return body.decode("utf-8", "replace").strip()


class _Buffered:
    """An answer read whole before it is translated (one JSON object comes out)."""

    content_type = JSON

    def __init__(self) -> None:
        self._body = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._body += data
        return []

    def _object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None (then `_error()` says what went wrong)."""
        try:
            doc = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    def _error(self) -> list[bytes]:
        return [error_line(error_message(bytes(self._body)) or "the upstream answer is empty")]


class ErrorBody(_Buffered):
    """An upstream error answer: `{"error": "<its message>"}`."""

    def finish(self) -> list[bytes]:
        return [error_line(error_message(bytes(self._body)))]


@dataclass
class _Tally:
    """What the done object reports, gathered from the upstream answer."""

    started_ns: int
    first_token_ns: int | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)

    def note(self, doc: dict[str, Any]) -> None:
        if isinstance(doc.get("usage"), dict):
            self.usage = doc["usage"]
        if isinstance(doc.get("timings"), dict):
            self.timings = doc["timings"]

    def stats(self, now_ns: int) -> dict[str, Any]:
        total = max(0, now_ns - self.started_ns)
        prompt_ms, predicted_ms = self.timings.get("prompt_ms"), self.timings.get("predicted_ms")
        if isinstance(prompt_ms, int | float) and isinstance(predicted_ms, int | float):
            prompt_ns, eval_ns = int(prompt_ms * 1e6), int(predicted_ms * 1e6)
        elif self.first_token_ns is not None:
            prompt_ns, eval_ns = self.first_token_ns - self.started_ns, now_ns - self.first_token_ns
        else:
            prompt_ns, eval_ns = 0, total
        prompt_n = self.usage.get("prompt_tokens", self.timings.get("prompt_n", 0))
        eval_n = self.usage.get("completion_tokens", self.timings.get("predicted_n", 0))
        return {
            "done_reason": "length" if self.finish_reason == "length" else "stop",
            "total_duration": total,
            "load_duration": max(0, total - prompt_ns - eval_ns),
            "prompt_eval_count": prompt_n if isinstance(prompt_n, int) else 0,
            "prompt_eval_duration": max(0, prompt_ns),
            "eval_count": eval_n if isinstance(eval_n, int) else 0,
            "eval_duration": max(0, eval_ns),
        }


def _ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as JSON text) → Ollama's (arguments as an object)."""
    out = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        arguments: Any = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                arguments = {"_raw": arguments}  # keep what the model wrote, visibly
        entry: dict[str, Any] = {
            "function": {"index": index, "name": function.get("name", ""), "arguments": arguments}
        }
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out


class _Shaper:
    """Builds Ollama objects of one shape for one model."""

    def __init__(self, shape: Shape, model: str, now: Callable[[], str]) -> None:
        self.shape = shape
        self.model = model
        self.now = now

    def piece(
        self, content: str, thinking: str, calls: list[dict[str, Any]] | None, done: bool
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.model, "created_at": self.now()}
        if self.shape == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = _ollama_calls(calls)
            obj["message"] = message
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = done
        return obj


def _delta_text(choice: dict[str, Any]) -> tuple[str, str]:
    """(content, thinking) of a stream choice (chat delta, or a completion's text)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        text = choice.get("text")
        return (text if isinstance(text, str) else ""), ""
    content = delta.get("content")
    thinking = delta.get("reasoning_content", delta.get("reasoning"))
    return (
        content if isinstance(content, str) else "",
        thinking if isinstance(thinking, str) else "",
    )


class _Completion:
    """What both completion readers keep: the shape, the clock and the tally."""

    def __init__(
        self,
        shape: Shape,
        model: str,
        clock: Clock,
        now: Callable[[], str] = now_rfc3339,
        started_ns: int | None = None,
    ) -> None:
        self._shaper = _Shaper(shape, model, now)
        self._clock = clock
        # From the request's arrival (the lease wait and a swap count in total_duration).
        self._tally = _Tally(started_ns=clock() if started_ns is None else started_ns)
        self._setup()

    def _setup(self) -> None:
        """A reader's own state (each has its own)."""


class CompletionStream(_Completion):
    """A streamed chat or completion (SSE) → Ollama NDJSON."""

    content_type = NDJSON

    def _setup(self) -> None:
        self._buffer = b""
        self._calls: dict[int, dict[str, Any]] = {}
        self._calls_sent = False
        self._ended = False  # `[DONE]` or a finish_reason was seen
        self._failed = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            out.extend(self._event(event))
        return out

    def finish(self) -> list[bytes]:
        out = self._event(self._buffer) if self._buffer.strip() else []
        self._buffer = b""
        if self._failed:
            return out
        if not self._ended:
            return [*out, error_line("the upstream stream ended before it was complete")]
        out.extend(self._send_calls())
        done = self._shaper.piece("", "", None, True)
        done.update(self._tally.stats(self._clock()))
        out.append(orjson.dumps(done) + b"\n")
        return out

    def _event(self, event: bytes) -> list[bytes]:
        data = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data or self._failed:
            return []
        if data.strip() == b"[DONE]":
            self._ended = True
            return []
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(doc, dict):
            return []
        if doc.get("error") is not None:
            self._failed = True
            return [error_line(error_message(data))]
        self._tally.note(doc)
        out: list[bytes] = []
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            content, thinking = _delta_text(choice)
            if content or thinking:
                if self._tally.first_token_ns is None:
                    self._tally.first_token_ns = self._clock()
                piece = self._shaper.piece(content, thinking, None, False)
                out.append(orjson.dumps(piece) + b"\n")
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                self._add_calls(delta["tool_calls"])
            if choice.get("finish_reason"):
                self._tally.finish_reason = choice["finish_reason"]
                self._ended = True
                out.extend(self._send_calls())
        return out

    def _add_calls(self, deltas: list[Any]) -> None:
        """Tool calls arrive in pieces (the arguments text in fragments), keyed by index."""
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", len(self._calls))
            blank = {"id": "", "function": {"name": "", "arguments": ""}}
            call = self._calls.setdefault(index, blank)
            if delta.get("id"):
                call["id"] = delta["id"]
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]

    def _send_calls(self) -> list[bytes]:
        if not self._calls or self._calls_sent:
            return []
        self._calls_sent = True
        calls = [self._calls[i] for i in sorted(self._calls)]
        return [orjson.dumps(self._shaper.piece("", "", calls, False)) + b"\n"]


class CompletionBody(_Completion, _Buffered):
    """A non-streamed chat or completion → one Ollama object."""

    def _setup(self) -> None:
        _Buffered.__init__(self)

    def finish(self) -> list[bytes]:
        doc = self._object()
        if doc is None or doc.get("error") is not None:
            return self._error()
        self._tally.note(doc)
        choices = doc.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        calls: list[dict[str, Any]] = []
        if isinstance(message, dict):
            content = message.get("content") or ""
            thinking = message.get("reasoning_content") or message.get("reasoning") or ""
            calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
        else:
            content, thinking = choice.get("text") or "", ""
        self._tally.finish_reason = choice.get("finish_reason")
        obj = self._shaper.piece(str(content), str(thinking), calls, True)
        obj.update(self._tally.stats(self._clock()))
        return [orjson.dumps(obj)]


class EmbedBody(_Buffered):
    """`/v1/embeddings` → `/api/embed` (`embeddings`) or legacy `/api/embeddings`
    (`embedding`, the first vector)."""

    def __init__(
        self, model: str, clock: Clock, *, legacy: bool, started_ns: int | None = None
    ) -> None:
        super().__init__()
        self._model = model
        self._clock = clock
        self._started = clock() if started_ns is None else started_ns
        self._legacy = legacy

    def finish(self) -> list[bytes]:
        doc = self._object()
        data = doc.get("data") if doc is not None else None
        if doc is None or not isinstance(data, list):
            return self._error()
        items = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
        vectors = [d.get("embedding") or [] for d in items]
        if self._legacy:
            return [orjson.dumps({"embedding": vectors[0] if vectors else []})]
        usage = doc.get("usage")
        tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
        total = max(0, self._clock() - self._started)
        return [
            orjson.dumps(
                {
                    "model": self._model,
                    "embeddings": vectors,
                    "total_duration": total,
                    "load_duration": 0,
                    "prompt_eval_count": tokens,
                }
            )
        ]
