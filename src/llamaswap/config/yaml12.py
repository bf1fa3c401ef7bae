"""Read YAML the way llama-swap does: Go's yaml.v3, which follows the YAML 1.2 core schema.

PyYAML alone follows YAML 1.1, where `1:30` is the sexagesimal int 90, `yes`/`on` are
booleans, `=` is a special "value" tag and `1e-2` is a string. llama-swap reads a plain
(unquoted) scalar by yaml.v3's `resolve` rules instead; this module repeats them on top of
libyaml's C parser (the speed of `CSafeLoader`, the rules of Go):

1. `~`, `null`, `Null`, `NULL` and the empty scalar are null; `true`/`True`/`TRUE` and
   `false`/`False`/`FALSE` are booleans (nothing else: `yes`, `on`, `y` are strings);
   `.inf`, `-.inf`, `+.inf`, `.nan` (three spellings each) are floats.
2. A scalar starting with `.` is a float when Go's `ParseFloat` reads it (`.5`, `.5e3`).
3. A scalar starting with a digit or a sign is, in this order: a timestamp (four digits and
   `-` first; Go layouts `2006-1-2`, `2006-1-2T15:4:5.999999999Z07:00` (or `t`),
   `2006-1-2 15:4:5.999999999`); an int (`_` removed, Go's prefixes `0x`, `0o`, `0b` and a
   leading `0` for octal, within int64, or uint64 without a sign); a float (`1.`, `1e-2`,
   `+.5`, `08`) when finite.
4. Anything else is a string (`1:30`, `=`, `yes`, `0x`, `1e999`).

What llama-swap then does with the values is repeated too: it decodes the document into an
untyped Go tree, so a timestamp becomes a `time.Time` printed as RFC 3339 (`2024-01-05` ->
`2024-01-05T00:00:00Z`), and a number or boolean in a string field becomes its Go text
(`scalar_text`: `2024` -> "2024", `1.50` -> "1.5"). Mapping keys are read as text here
(`123:` is the model ID "123"), and a key written twice in one mapping is an error, as in
yaml.v3. Only the first document of a stream is read: llama-swap never looks past it, not
even for syntax errors.
"""

from __future__ import annotations

import calendar
import math
import re
from decimal import Decimal
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = ["Loader", "go_float", "load_first", "loader_on", "resolve_plain", "scalar_text"]

NULL = "tag:yaml.org,2002:null"
BOOL = "tag:yaml.org,2002:bool"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
STR = "tag:yaml.org,2002:str"
TIMESTAMP = "tag:yaml.org,2002:timestamp"
MERGE = "tag:yaml.org,2002:merge"

# yaml.v3's `resolveMap`: exact spellings with a fixed value.
_FIXED: dict[str, tuple[str, Any]] = {
    **{s: (BOOL, True) for s in ("true", "True", "TRUE")},
    **{s: (BOOL, False) for s in ("false", "False", "FALSE")},
    **{s: (NULL, None) for s in ("", "~", "null", "Null", "NULL")},
    **{s: (FLOAT, math.nan) for s in (".nan", ".NaN", ".NAN")},
    **{s: (FLOAT, math.inf) for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: (FLOAT, -math.inf) for s in ("-.inf", "-.Inf", "-.INF")},
    "<<": (MERGE, "<<"),
}
_DIGIT_OR_SIGN = frozenset("0123456789+-")
# Go's strconv.ParseInt(s, 0, 64) syntax (after yaml.v3 removed every `_`).
_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
# yaml.v3's `yamlStyleFloat`, and what ParseFloat reads of a scalar starting with `.`.
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_BAD_UNDERSCORE = re.compile(r"(?<![0-9])_|_(?![0-9])")
_DATE = r"(\d{4})-(\d{1,2})-(\d{1,2})"
_TIME = r"(\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?"
_TIMESTAMPS = tuple(
    re.compile(pattern, re.ASCII)  # Go's digits are 0-9 only
    for pattern in (
        _DATE + "[Tt]" + _TIME + r"(Z|[-+]\d\d:\d\d)",
        _DATE + " " + _TIME + "()",
        _DATE + "()()()()()",
    )
)
_INT64 = 1 << 63
_UINT64 = 1 << 64


def _go_int(text: str) -> int | None:
    match = _INT.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "xXoObB":
        value = int(digits[2:], {"x": 16, "o": 8, "b": 2}[digits[1].lower()])
    else:
        value = int(digits, 8 if digits.startswith("0") and len(digits) > 1 else 10)
    if sign == "-":
        value = -value
    if -_INT64 <= value < _INT64 or (not sign and value < _UINT64):
        return value
    return None


def _go_float(text: str, pattern: re.Pattern[str]) -> float | None:
    if pattern.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # Go refuses what overflows


def _go_timestamp(text: str) -> str | None:
    """`text` as Go's time.Time prints it (RFC 3339, nanoseconds), if yaml.v3 reads a time."""
    if len(text) < 5 or text[4] != "-":
        return None
    for pattern in _TIMESTAMPS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        y, mo, d = int(year), int(month), int(day)
        h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
        if not (1 <= mo <= 12 and 1 <= d <= _days_in(y, mo)) or h >= 24 or mi >= 60 or s >= 60:
            return None
        offset = _zone(zone)
        if offset is None:
            return None
        nanos = (fraction or "")[:9].ljust(9, "0").rstrip("0")
        out = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}" + (f".{nanos}" if nanos else "")
        return out + offset
    return None


def _days_in(year: int, month: int) -> int:
    if month == 2:
        return 29 if calendar.isleap(year) else 28  # year 0 is a leap year, as in Go
    return 30 if month in (4, 6, 9, 11) else 31


def _zone(zone: str) -> str | None:
    """A zone suffix as Go prints it (`Z` for no offset), or None when Go refuses it."""
    if zone in ("", "Z"):
        return "Z"
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 24 or minutes > 60:  # Go allows 24 hours and 60 minutes, oddly
        return None
    offset = hours * 60 + minutes
    if offset == 0:
        return "Z"
    return f"{zone[0]}{offset // 60:02d}:{offset % 60:02d}"


def resolve_plain(text: str) -> tuple[str, Any]:
    """The tag and value yaml.v3 gives a plain (unquoted, untagged) scalar."""
    fixed = _FIXED.get(text)
    if fixed is not None:
        return fixed
    first = text[0]
    if first == ".":
        # Go's ParseFloat allows `_` only between two digits.
        digits = None if _BAD_UNDERSCORE.search(text) else text.replace("_", "")
        value = None if digits is None else _go_float(digits, _DOT_FLOAT)
        if value is not None:
            return FLOAT, value
    elif first in _DIGIT_OR_SIGN:
        stamp = _go_timestamp(text)
        if stamp is not None:
            return TIMESTAMP, stamp
        plain = text.replace("_", "")
        number = _go_int(plain)
        if number is not None:
            return INT, number
        value = _go_float(plain, _FLOAT)
        if value is not None:
            return FLOAT, value
    return STR, text


def go_float(f: float) -> str:
    """A float as Go's `%v` prints it (shortest text; exponent from 1e+06 and below 1e-04)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    point = len(ds) + exp  # position of the decimal point relative to the digits
    lead = "-" if sign else ""
    if point - 1 < -4 or point - 1 >= 6:  # Go's shortest %g switches at 1e+06
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{lead}{mant}e{point - 1:+03d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return lead + ds + "0" * (point - len(ds))
    return f"{lead}{ds[:point]}.{ds[point:]}"


def scalar_text(value: Any) -> Any:
    """A YAML scalar as llama-swap reads it into a string field: its Go text (`2024` ->
    "2024", `1.50` -> "1.5", `true` -> "true"). Anything else is returned unchanged."""
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return go_float(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


def loader_on(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """A loader class with llama-swap's rules on `base`'s parser (libyaml's, or PyYAML's own
    where libyaml is missing)."""

    class Loader(base):  # type: ignore[valid-type,misc]
        """`base`'s parser with yaml.v3's scalar rules, text keys and unique keys."""

        def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
            if kind is ScalarNode and implicit[0]:
                return resolve_plain(value)[0]
            tag: str = super().resolve(kind, value, implicit)
            return tag

        def construct_plain(self, node: ScalarNode) -> Any:
            """An int, float or timestamp scalar (plain, or with that explicit tag)."""
            tag, value = resolve_plain(node.value) if node.value else (STR, "")
            if tag == INT and node.tag == FLOAT:
                return float(value)
            if tag != node.tag:
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot decode {node.value!r} as {node.tag}", node.start_mark
                )
            return value

        def construct_bool(self, node: ScalarNode) -> Any:
            return self.construct_plain(node)

        def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, ScalarNode) and key.value != "<<":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f'mapping key "{key.value}" already defined at line {seen[key.value]}',
                            key.start_mark,
                        )
                    seen[key.value] = line
            self.flatten_mapping(node)
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, list | dict):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found unhashable key",
                        key_node.start_mark,
                    )
                # Keys are text in llama-swap's typed config (`123:` is the model "123"); made
                # text before insertion so `1` and `true` stay two keys.
                mapping[scalar_text(key)] = self.construct_object(value_node, deep=deep)
            return mapping

    for tag in (INT, FLOAT, TIMESTAMP):
        Loader.add_constructor(tag, Loader.construct_plain)
    Loader.add_constructor(BOOL, Loader.construct_bool)
    return Loader


Loader = loader_on(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_first(text: str, loader_class: type[yaml.SafeLoader] = Loader) -> Any:
    """The first document of `text` (None when there is none), as llama-swap reads it."""
    loader = loader_class(text)
    try:
        if not loader.check_node():
            return None
        return loader.construct_document(loader.get_node())
    finally:
        loader.dispose()
