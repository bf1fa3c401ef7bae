"""Token metrics from a finished upstream response (spec §6.1 [H]); pure, no I/O, no logging.

`parse_response` takes what the recorder saw — path, status, content type and encoding, the
whole response body and the wall-clock duration — and returns the numbers of one activity
row. It never raises: whatever the bytes, the result is a row (at worst a minimal one).

Decision tree of `parse_response`:

1. Decode the body by `Content-Encoding` (gzip/deflate; anything else is taken as plain).
2. Status ≠ 200: a minimal row whose `error_msg` is the first non-empty string at
   `error.message`, `error`, `message`, `detail` of the JSON body (cut at 500 chars + `...`),
   else `<code> <Status Text>`; a body that cannot be decoded gives
   `response decode failed: <err>`.
3. 200 with an undecodable body: minimal row, `response decompression failed: <err>`.
4. 200, empty body: minimal row.
5. `text/event-stream`: every `data:` event is read; `usage` / `response.usage` /
   `message.usage` (a later non-zero count wins), `timings` (last), vLLM `metrics` (last).
   No event with any of them: minimal row.
6. Otherwise JSON: top-level `usage`, `timings` (for `/infill`, the last array element's
   `timings`) and vLLM `metrics`; none of them, or invalid JSON: minimal row.

A minimal row has every count and speed 0. When usage data was found, unknown values are -1:
cached tokens without a cache field, speeds without `timings`/`metrics`, draft counters
without both draft fields. llama.cpp `timings` override the usage counts and give the
speeds, and the duration becomes max(wall, prompt_ms + predicted_ms).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

__all__ = [
    "ERROR_MSG_LIMIT",
    "ParsedResponse",
    "TokenMetrics",
    "decode_body",
    "error_message",
    "filter_accept_encoding",
    "parse_response",
]

ERROR_MSG_LIMIT = 500
UNKNOWN = -1
_USAGE_PATHS = (("usage",), ("response", "usage"), ("message", "usage"))
_ERROR_PATHS = (("error", "message"), ("error",), ("message",), ("detail",))
# An event holds usage data only if one of these keys is in it: written as is, unless the
# JSON escapes characters of a key (`\u…`), which sends the event to the parser regardless.
_USAGE_KEYS = (b'"usage"', b'"timings"', b'"metrics"')
_DECODABLE = frozenset({"gzip", "deflate"})


@dataclass(frozen=True, slots=True)
class TokenMetrics:
    """The `tokens` object of an activity row."""

    cache_tokens: int = 0
    draft_tokens: int = 0
    draft_acc_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    prompt_per_second: float = 0.0
    tokens_per_second: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "cache_tokens": self.cache_tokens,
            "draft_tokens": self.draft_tokens,
            "draft_acc_tokens": self.draft_acc_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "prompt_per_second": self.prompt_per_second,
            "tokens_per_second": self.tokens_per_second,
        }


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """What one response contributes to its activity row (and to its capture)."""

    tokens: TokenMetrics
    duration_ms: int
    error_msg: str = ""
    # The body after Content-Encoding was undone (the raw body when that failed).
    body: bytes = field(default=b"", repr=False)


class BodyDecodeError(ValueError):
    """A gzip/deflate body that does not decompress."""


def filter_accept_encoding(value: str) -> str:
    """Keep only the gzip/deflate entries of an `Accept-Encoding` value (with their q)."""
    kept = []
    for part in value.split(","):
        coding = part.split(";", 1)[0].strip().lower()
        if coding in _DECODABLE:
            kept.append(part.strip())
    return ", ".join(kept)


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """Undo a gzip or deflate `Content-Encoding`; other encodings are returned as they are."""
    coding = content_encoding.strip().lower()
    if coding not in _DECODABLE or not body:
        return body
    try:
        if coding == "gzip":
            decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            # HTTP's "deflate" is zlib-wrapped, but raw deflate is common in the wild.
            decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS if _zlib_header(body) else -15)
        out = decoder.decompress(body) + decoder.flush()
        if not decoder.eof:
            raise BodyDecodeError("unexpected EOF")
        return out
    except zlib.error as exc:
        raise BodyDecodeError(str(exc)) from exc


def _zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def parse_response(
    *,
    path: str,
    status: int,
    content_type: str,
    content_encoding: str,
    body: bytes,
    wall_ms: int,
) -> ParsedResponse:
    """The activity numbers of one finished response (see the module docstring)."""
    minimal = TokenMetrics()
    try:
        decoded = decode_body(body, content_encoding)
    except BodyDecodeError as exc:
        prefix = "response decode failed" if status != 200 else "response decompression failed"
        return ParsedResponse(minimal, wall_ms, f"{prefix}: {exc}", body)
    if status != 200:
        return ParsedResponse(minimal, wall_ms, error_message(status, decoded), decoded)
    if not decoded:
        return ParsedResponse(minimal, wall_ms, "", decoded)
    if "text/event-stream" in content_type.lower():
        found = _scan_events(decoded)
    else:
        found = _scan_json(path, decoded)
    if found is None:
        return ParsedResponse(minimal, wall_ms, "", decoded)
    tokens, duration = found.build(wall_ms)
    return ParsedResponse(tokens, duration, "", decoded)


def error_message(status: int, body: bytes) -> str:
    """The error text of a failed response: from its JSON, else `<code> <Status Text>`."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    for path in _ERROR_PATHS:
        value = _get(parsed, path)
        if isinstance(value, str) and value.strip():
            if len(value) > ERROR_MSG_LIMIT:
                return value[:ERROR_MSG_LIMIT] + "..."
            return value
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


# ---- scanning -------------------------------------------------------------------------------


@dataclass
class _Found:
    """Usage data gathered from one body, before the row's numbers are derived."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = UNKNOWN
    timings: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None

    def add_usage(self, usage: Any) -> bool:
        """Merge one usage object; later non-zero counts win. False if it had no count."""
        if not isinstance(usage, dict):
            return False
        seen = False
        value = _first(usage, "prompt_tokens", "input_tokens")
        if value is not None:
            seen = True
            if _int(value) > 0:
                self.input_tokens = _int(value)
        value = _first(usage, "completion_tokens", "output_tokens")
        if value is not None:
            seen = True
            if _int(value) > 0:
                self.output_tokens = _int(value)
        cached = _cached(usage)
        if cached is not None:
            seen = True
            if _int(cached) >= 0:
                self.cached = _int(cached)
        return seen

    def build(self, wall_ms: int) -> tuple[TokenMetrics, int]:
        inputs, outputs, cached = self.input_tokens, self.output_tokens, self.cached
        prompt_speed = gen_speed = float(UNKNOWN)
        drafted = accepted = UNKNOWN
        duration = wall_ms
        if self.timings is not None:
            t = self.timings
            inputs = _int(t.get("prompt_n"))
            outputs = _int(t.get("predicted_n"))
            prompt_speed = _float(t.get("prompt_per_second"))
            gen_speed = _float(t.get("predicted_per_second"))
            timed = _float(t.get("prompt_ms")) + _float(t.get("predicted_ms"))
            duration = max(duration, _clamp_int(timed))
            if "cache_n" in t:
                cached = _int(t.get("cache_n"))
            if "draft_n" in t and "draft_n_accepted" in t:
                drafted, accepted = _int(t["draft_n"]), _int(t["draft_n_accepted"])
        elif self.metrics is not None:
            m = self.metrics
            spec = m.get("speculative_decoding")
            if (
                isinstance(spec, dict)
                and "num_draft_tokens" in spec
                and "num_accepted_draft_tokens" in spec
            ):
                drafted = _int(spec["num_draft_tokens"])
                accepted = _int(spec["num_accepted_draft_tokens"])
            ttft = _float(m.get("time_to_first_token_ms"))
            if ttft > 0:
                prompt_speed = (inputs - max(cached, 0)) / (ttft / 1000.0)
            itl = _float(m.get("mean_itl_ms"))
            if itl > 0:
                gen_speed = 1000.0 / itl
        tokens = TokenMetrics(
            cache_tokens=cached,
            draft_tokens=drafted,
            draft_acc_tokens=accepted,
            input_tokens=inputs,
            output_tokens=outputs,
            prompt_per_second=_finite(prompt_speed),
            tokens_per_second=_finite(gen_speed),
        )
        return tokens, duration


def _scan_events(body: bytes) -> _Found | None:
    found = _Found()
    seen = False
    for raw_line in body.splitlines():
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        if b"\\u" not in data and not any(key in data for key in _USAGE_KEYS):
            continue  # most events of a stream: no usage to find, nothing to parse
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        for path in _USAGE_PATHS:
            seen |= found.add_usage(_get(event, path))
        timings = event.get("timings")
        if isinstance(timings, dict):
            found.timings = timings
            seen = True
        metrics = event.get("metrics")
        if isinstance(metrics, dict):
            found.metrics = metrics
            seen = True
    return found if seen else None


def _scan_json(path: str, body: bytes) -> _Found | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = _Found()
    timings: Any = None
    metrics: Any = None
    usage: Any = None
    if isinstance(parsed, dict):
        usage, timings, metrics = parsed.get("usage"), parsed.get("timings"), parsed.get("metrics")
    if path.startswith("/infill") and isinstance(parsed, list) and parsed:
        last = parsed[-1]
        timings = last.get("timings") if isinstance(last, dict) else None
    found.add_usage(usage)
    seen = isinstance(usage, dict)
    if isinstance(timings, dict):
        found.timings = timings
        seen = True
    if isinstance(metrics, dict):
        found.metrics = metrics
        seen = True
    return found if seen else None


# ---- JSON helpers ---------------------------------------------------------------------------


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first(obj: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in obj and obj[key] is not None:
            return obj[key]
    return None


def _cached(usage: dict[str, Any]) -> Any:
    if usage.get("cache_read_input_tokens") is not None:
        return usage["cache_read_input_tokens"]
    for details in ("input_tokens_details", "prompt_tokens_details"):
        value = _get(usage, (details, "cached_tokens"))
        if value is not None:
            return value
    return None


def _float(value: Any) -> float:
    """A JSON number as float; anything else (strings, bools, null) as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return _finite(float(value))


def _int(value: Any) -> int:
    """A JSON number as int (floats truncated, as Go's gjson does); anything else as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return _clamp_int(value)
    return _clamp_int(_float(value))


_INT_LIMIT = 2**62  # SQLite integers are 64-bit; absurd counts are clamped, not rejected.


def _clamp_int(value: float) -> int:
    whole = math.trunc(value) if math.isfinite(value) else 0
    return max(-_INT_LIMIT, min(_INT_LIMIT, whole))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
