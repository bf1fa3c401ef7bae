"""Memory sizes as written in a config: `24GiB`, `512MB`, `1.5 GiB`, `12Gi`, or plain bytes. Pure.

Binary units (`KiB`, `MiB`, `GiB`, `TiB`, and Kubernetes' `Ki`, `Mi`, `Gi`, `Ti`) are powers
of 1024; decimal units (`KB`, `MB`, `GB`, `TB`, and `K`, `M`, `G`, `T`) are powers of 1000,
as the SI says and as Kubernetes reads them. GPU vendors print MiB, so write GiB for a card's
memory. Units are case-sensitive apart from a lowercase `k`, the SI spelling.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["SIZE_PATTERN", "SIZE_SCHEMA", "ByteSize", "format_size", "parse_size"]

KIB = 1024
MIB = KIB**2
GIB = KIB**3
_UNITS = {
    "": 1,
    "B": 1,
    **{f"{p}iB": KIB ** (i + 1) for i, p in enumerate("KMGT")},
    **{f"{p}i": KIB ** (i + 1) for i, p in enumerate("KMGT")},
    **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("KMGT")},
    **{p: 1000 ** (i + 1) for i, p in enumerate("KMGT")},
    "kB": 1000,
    "k": 1000,
}
SIZE_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*([KMGT]i?B?|kB?|B)?\s*$"
_SIZE = re.compile(SIZE_PATTERN)


def parse_size(value: Any) -> int:
    """Bytes in `value` (an int, or a string with an optional unit); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 24GiB or 512MB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must be >= 0, got {value}")
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 24GiB or 512MB, got {value!r}")
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f'invalid size "{value}": expected a number with a unit such as 24GiB')
    return int(float(match.group(1)) * _UNITS[match.group(3) or ""])


def format_size(n: int) -> str:
    """A short human spelling of `n` bytes in binary units (`20GiB`, `1.5GiB`, `300MiB`)."""
    for unit, size in (("TiB", KIB**4), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n}B"


SIZE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": SIZE_PATTERN},
    ],
    "description": "bytes, or a number with a unit: 24GiB, 512MiB, 8GB, 12Gi",
}
# A size field: accepts the spellings above, holds bytes; its JSON Schema shows both forms.
ByteSize = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(SIZE_SCHEMA)]
