"""Durations in config values: Go duration strings (`5s`, `1m30s`, `250ms`) or seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration string (`5s`, `1m30s`, `1.5h`), or None if it is not one."""
    text = text.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def to_seconds(value: Any) -> Any:
    """A config duration as seconds: a number is seconds, a string a Go duration. Anything
    else is passed on for pydantic to refuse with its own message."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 1m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        parsed = parse_duration(value)
        if parsed is None:
            raise ValueError(f'invalid duration "{value}" (write e.g. 30s, 1m30s or 500ms)')
        seconds = parsed
    else:
        return value
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)\s*$"},
    ],
    "description": "seconds, or a Go duration: 500ms, 30s, 1m30s, 2h",
}
# The schema shows both spellings (a bare BeforeValidator would leave only `number`).
Duration = Annotated[float, BeforeValidator(to_seconds), WithJsonSchema(DURATION_SCHEMA)]
"""A config field holding a duration, stored as seconds."""
