"""Ollama API requests → OpenAI API requests (pure: values in, values out).

`/api/chat` and `/api/generate` become `/v1/chat/completions` (or `/v1/completions` for a
`raw` generate), `/api/embed` and `/api/embeddings` become `/v1/embeddings`. What maps:

* `options`: `temperature`, `top_p`, `top_k`, `min_p`, `typical_p`, `seed`, `stop`,
  `presence_penalty`, `frequency_penalty`, `repeat_penalty`, `repeat_last_n` by name;
  `num_predict` → `max_tokens` (negative = no limit: left out). Load-time options
  (`num_ctx`, `num_gpu`, `num_thread`, …) belong to the model's `cmd` here and are ignored.
* `format`: `"json"` → `response_format: {"type": "json_object"}`; a JSON schema →
  `{"type": "json_schema", "json_schema": {"name": "schema", "schema": …}}`.
* `images` (base64, no media type) → `image_url` content parts with a `data:` URL whose
  media type is guessed from the first bytes.
* `tools` pass through (Ollama's are OpenAI-shaped); an assistant message's `tool_calls`
  get ids (`call_<n>`) and JSON-string arguments; a `tool` message is answered with the
  id of the oldest unanswered call of its `tool_name` (else of any call).
* `think`: a bool → llama.cpp's `chat_template_kwargs.enable_thinking`; `"low"` /
  `"medium"` / `"high"` → `reasoning_effort`. An assistant message's `thinking` →
  `reasoning_content`.
Errors raise `BadRequest` (the routes answer them as `{"error": …}`).
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from llamaswap.config.durations import parse_duration
from llamaswap.errors import BadRequest

__all__ = [
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "EMBEDDINGS_PATH",
    "Upstream",
    "chat_request",
    "embed_request",
    "generate_request",
    "image_url",
    "keep_alive_seconds",
    "model_name",
    "parse_object",
]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

# Sampling options llama.cpp's server (and most OpenAI-compatible servers) read by name.
_SAME_NAME_OPTIONS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "repeat_last_n",
)
_EFFORTS = frozenset({"low", "medium", "high"})
# Leading base64 characters of common image files (PNG, JPEG, GIF, WebP, BMP).
_IMAGE_PREFIXES = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
    ("Qk", "image/bmp"),
)


@dataclass(frozen=True)
class Upstream:
    """The OpenAI request an Ollama request becomes."""

    path: str
    body: dict[str, Any]
    stream: bool


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is `{}`)."""
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    return doc


def model_name(doc: dict[str, Any]) -> str:
    """`model` (or the older `name`); 400 when missing."""
    name = doc.get("model") or doc.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("model is required")
    return name


def keep_alive_seconds(value: Any) -> float | None:
    """`keep_alive` as seconds: a number is seconds, a string a Go duration (`"5m"`, `"0"`);
    negative means "forever". None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest("keep_alive must be a number or a duration")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise BadRequest("keep_alive must be a number or a duration")
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    seconds = parse_duration(text.removeprefix("-"))
    if seconds is None:
        raise BadRequest(f"invalid keep_alive duration {value!r}")
    return sign * seconds


def image_url(data: Any) -> str:
    """A `data:` URL for an Ollama image (base64 text, or already a data URL)."""
    if not isinstance(data, str) or not data:
        raise BadRequest("images must be base64-encoded strings")
    if data.startswith("data:"):
        return data
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("images must be base64-encoded strings") from exc
    media = next((m for prefix, m in _IMAGE_PREFIXES if data.startswith(prefix)), "image/png")
    return f"data:{media};base64,{data}"


def _options(doc: dict[str, Any], body: dict[str, Any]) -> None:
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    for name in _SAME_NAME_OPTIONS:
        if options.get(name) is not None:
            body[name] = options[name]
    predict = options.get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict >= 0:
        body["max_tokens"] = predict


def _format(doc: dict[str, Any], body: dict[str, Any]) -> None:
    fmt = doc.get("format")
    if fmt in (None, ""):
        return
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "schema", "schema": fmt},
        }
    else:
        raise BadRequest('format must be "json" or a JSON schema')


def _think(doc: dict[str, Any], body: dict[str, Any]) -> None:
    think = doc.get("think")
    if think is None:
        return
    if isinstance(think, bool):
        body["chat_template_kwargs"] = {"enable_thinking": think}
    elif think in _EFFORTS:
        body["reasoning_effort"] = think
        body["chat_template_kwargs"] = {"enable_thinking": True}
    else:
        raise BadRequest('think must be true, false, "low", "medium" or "high"')


def _content(text: Any, images: Any) -> Any:
    """A message's content: the text, or text and image parts when there are images."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BadRequest("message content must be a string")
    if not images:
        return text
    if not isinstance(images, list):
        raise BadRequest("images must be a list")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": image_url(i)}} for i in images)
    return parts


class _CallIds:
    """Gives tool calls ids and answers tool results with them, in order."""

    def __init__(self) -> None:
        self._count = 0
        self._open: deque[tuple[str, str]] = deque()  # (name, id), oldest first

    def new(self, name: str) -> str:
        self._count += 1
        call_id = f"call_{self._count}"
        self._open.append((name, call_id))
        return call_id

    def answer(self, name: str | None) -> str | None:
        match = next((entry for entry in self._open if entry[0] == name), None)
        if match is None and self._open:
            match = self._open[0]
        if match is None:
            return None
        self._open.remove(match)
        return match[1]


def _tool_calls(calls: Any, ids: _CallIds) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise BadRequest("tool_calls must be a list")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("each tool call needs a function with a name")
        arguments = function.get("arguments") or {}
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        out.append(
            {
                "id": call.get("id") or ids.new(function["name"]),
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    ids = _CallIds()
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message needs a role")
        role = message["role"]
        converted: dict[str, Any] = {
            "role": role,
            "content": _content(message.get("content"), message.get("images")),
        }
        if message.get("tool_calls"):
            converted["tool_calls"] = _tool_calls(message["tool_calls"], ids)
        if message.get("thinking"):
            converted["reasoning_content"] = message["thinking"]
        if role == "tool":
            name = message.get("tool_name")
            call_id = ids.answer(name if isinstance(name, str) else None)
            if call_id is not None:
                converted["tool_call_id"] = call_id
            if isinstance(name, str):
                converted["name"] = name
        out.append(converted)
    return out


def _common(doc: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    _options(doc, body)
    _format(doc, body)
    return body


def _stream(doc: dict[str, Any]) -> bool:
    """Ollama streams unless told `"stream": false`."""
    return doc.get("stream") is not False


def chat_request(doc: dict[str, Any], model: str) -> Upstream:
    """`/api/chat` → `/v1/chat/completions`; `model` is the name to send upstream."""
    stream = _stream(doc)
    body = _common(doc, model, stream)
    body["messages"] = _messages(doc.get("messages") or [])
    if doc.get("tools"):
        if not isinstance(doc["tools"], list):
            raise BadRequest("tools must be a list")
        body["tools"] = doc["tools"]
    _think(doc, body)
    return Upstream(CHAT_PATH, body, stream)


def generate_request(doc: dict[str, Any], model: str) -> Upstream:
    """`/api/generate` → a one-turn chat (with `system` and `images`), or `/v1/completions`
    for `raw` prompts (no template). `suffix` (fill-in-the-middle) is refused."""
    if doc.get("suffix"):
        raise BadRequest("suffix (fill-in-the-middle) is not supported; use /infill")
    prompt = doc.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    stream = _stream(doc)
    body = _common(doc, model, stream)
    if doc.get("raw"):
        body["prompt"] = prompt
        return Upstream(COMPLETIONS_PATH, body, stream)
    messages: list[dict[str, Any]] = []
    system = doc.get("system")
    if system:
        if not isinstance(system, str):
            raise BadRequest("system must be a string")
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _content(prompt, doc.get("images"))})
    body["messages"] = messages
    _think(doc, body)
    return Upstream(CHAT_PATH, body, stream)


def embed_request(doc: dict[str, Any], model: str, *, legacy: bool) -> Upstream:
    """`/api/embed` (`input`: text or list) or the legacy `/api/embeddings` (`prompt`)."""
    text = doc.get("prompt") if legacy else doc.get("input")
    if text is None:
        text = ""
    texts = text if isinstance(text, list) else [text]
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("input must be a string or a list of strings")
    body: dict[str, Any] = {"model": model, "input": text}
    dimensions = doc.get("dimensions")
    if isinstance(dimensions, int) and not isinstance(dimensions, bool) and dimensions > 0:
        body["dimensions"] = dimensions
    return Upstream(EMBEDDINGS_PATH, body, False)
