"""Request-body filters: useModelName, stripParams, setParams, setParamsByID (spec §2.4); pure.

Edits are made on the JSON *text*, as Go's sjson does: a small scanner finds the byte span
of the value a path names and only that span is replaced, deleted or appended to. Every
byte outside the touched members stays as the client sent it (key order, spacing, number
spelling, escapes). The body is parsed once with orjson first, which validates it and
answers "is this path present?" without scanning.

Paths are gjson-style: dots separate object keys (`chat_template_kwargs.enable_thinking`),
`\\.` is a literal dot, and a number component indexes an existing array element. Setting
through a missing key creates the nested objects; setting through a scalar replaces it with
an object (sjson does the same); an array index out of range is left alone. The top-level
`model` key is protected from strip/set; only `rewrite_model` changes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from llamaswap.errors import BadRequest, RequestRejected
from llamaswap.server.extract import BodyKind, rewrite_multipart_model

__all__ = ["apply_json_filters", "normalise_strip_params", "rewrite_model", "split_path"]

_WS = re.compile(rb"[ \t\r\n]*+")
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_PLAIN = rb'[^"\[\]{}]*+'
_STRING = re.compile(_STR)
_SCALAR = re.compile(rb"[^,\]}\s]*+")
# Everything up to the next structural bracket, strings included, in one C-level match.
_RUN = re.compile(_PLAIN + rb"(?:" + _STR + _PLAIN + rb")*+")


def _nesting(inner: bytes | None) -> bytes:
    """A container whose children are scalars, strings or `inner` containers."""
    child = _STR if inner is None else _STR + b"|" + inner
    return rb"[\[{]" + _PLAIN + rb"(?:(?:" + child + rb")" + _PLAIN + rb")*+[\]}]"


def _deep(levels: int) -> re.Pattern[bytes]:
    pattern: bytes | None = None
    for _ in range(levels):
        pattern = _nesting(pattern)
    assert pattern is not None
    return re.compile(pattern)


# A whole container up to 5 levels deep in one C-level match (possessive, so no
# backtracking blow-up); deeper values fall back to the bracket loop in `_value_end`.
_DEEP = _deep(5)
_OPEN = frozenset(b"{[")
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET, _QUOTE, _COMMA = b'{}[]",'
_MISSING = object()


def split_path(path: str) -> list[str]:
    """Split a gjson path on unescaped dots: `a.b\\.c` → `["a", "b.c"]`."""
    parts = re.split(r"(?<!\\)\.", path)
    return [p.replace("\\.", ".") for p in parts]


def normalise_strip_params(names: Sequence[str]) -> list[str]:
    """Trimmed, deduplicated, sorted names without empties and without `model`."""
    return sorted({n.strip() for n in names} - {"", "model"})


# --- the scanner (assumes valid JSON: orjson has already accepted the text) ------------


def _ws(buf: bytes, i: int) -> int:
    m = _WS.match(buf, i)
    return m.end() if m else i


def _value_end(buf: bytes, i: int) -> int:
    """End offset of the JSON value starting at `i`."""
    c = buf[i]
    if c == _QUOTE:
        m = _STRING.match(buf, i)
        return m.end() if m else len(buf)
    if c in _OPEN:
        depth = 0
        while i < len(buf):
            if buf[i] in _OPEN:
                m = _DEEP.match(buf, i)
                if m is None:
                    depth += 1
                    i += 1
                else:
                    i = m.end()
            else:
                depth -= 1
                i += 1
            if depth == 0:
                return i
            m = _RUN.match(buf, i)
            i = m.end() if m else i
        return len(buf)
    m = _SCALAR.match(buf, i)
    return m.end() if m else i


def _key(raw: bytes) -> str:
    if b"\\" in raw:
        value = orjson.loads(raw)
        return str(value)
    return raw[1:-1].decode("utf-8", "surrogatepass")


def _members(buf: bytes, start: int) -> list[tuple[str, int, int, int]]:
    """`(key, key start, value start, value end)` of each member of the object at `start`."""
    out: list[tuple[str, int, int, int]] = []
    i = _ws(buf, start + 1)
    while buf[i] != _RBRACE:
        m = _STRING.match(buf, i)
        if m is None:  # pragma: no cover - orjson validated the text
            raise BadRequest("invalid JSON body: unexpected token")
        vs = _ws(buf, _ws(buf, m.end()) + 1)
        ve = _value_end(buf, vs)
        out.append((_key(m.group()), i, vs, ve))
        i = _ws(buf, ve)
        if buf[i] == _COMMA:
            i = _ws(buf, i + 1)
    return out


def _elements(buf: bytes, start: int) -> list[tuple[int, int]]:
    """`(value start, value end)` of each element of the array at `start`."""
    out: list[tuple[int, int]] = []
    i = _ws(buf, start + 1)
    while buf[i] != _RBRACKET:
        ve = _value_end(buf, i)
        out.append((i, ve))
        i = _ws(buf, ve)
        if buf[i] == _COMMA:
            i = _ws(buf, i + 1)
    return out


def _child(buf: bytes, start: int, comp: str) -> tuple[int, int, int] | None:
    """`(item start, value start, value end)` of `comp` in the container at `start`.

    For objects the *last* member with that key wins, as in orjson and Go's decoder.
    """
    if buf[start] == _LBRACE:
        found = [(ks, vs, ve) for key, ks, vs, ve in _members(buf, start) if key == comp]
        return found[-1] if found else None
    if comp.isdigit():
        elements = _elements(buf, start)
        index = int(comp)
        if index < len(elements):
            vs, ve = elements[index]
            return vs, vs, ve
    return None


def _delete_item(buf: bytes, item: int, end: int) -> bytes:
    """Remove the member/element spanning `item..end` and one adjoining comma."""
    after = _ws(buf, end)
    if buf[after] == _COMMA:
        return buf[:item] + buf[_ws(buf, after + 1) :]
    before = len(buf[:item].rstrip())
    if buf[before - 1] == _COMMA:
        return buf[: before - 1] + buf[end:]
    return buf[:item] + buf[end:]


def _append_member(buf: bytes, obj_end: int, key: str, value: bytes) -> bytes:
    """Add `"key":value` as the last member of the object whose `}` is at `obj_end - 1`."""
    close = obj_end - 1
    last = len(buf[:close].rstrip())
    member = orjson.dumps(key) + b":" + value
    if buf[last - 1] != _LBRACE:
        member = b"," + member
    return buf[:last] + member + buf[last:]


def _nested(comps: Sequence[str], value: bytes) -> bytes:
    for comp in reversed(comps):
        value = b"{" + orjson.dumps(comp) + b":" + value + b"}"
    return value


# --- edits on text and on the parsed mirror ----------------------------------------------


def _doc_get(doc: Any, comps: Sequence[str]) -> Any:
    for comp in comps:
        if isinstance(doc, dict) and comp in doc:
            doc = doc[comp]
        elif isinstance(doc, list) and comp.isdigit() and int(comp) < len(doc):
            doc = doc[int(comp)]
        else:
            return _MISSING
    return doc


def _strip(buf: bytes, doc: dict[str, Any], comps: Sequence[str]) -> bytes:
    parent = _doc_get(doc, comps[:-1])
    if _doc_get(parent, comps[-1:]) is _MISSING:
        return buf
    if isinstance(parent, dict):
        del parent[comps[-1]]
    else:
        del parent[int(comps[-1])]
    start = _ws(buf, 0)
    for comp in comps[:-1]:
        found = _child(buf, start, comp)
        assert found is not None
        start = found[1]
    # Duplicate keys: delete every occurrence so no earlier one resurfaces.
    while (found := _child(buf, start, comps[-1])) is not None:
        buf = _delete_item(buf, found[0], found[2])
        if buf[start] != _LBRACE:
            break
    return buf


def _set(buf: bytes, doc: dict[str, Any], comps: Sequence[str], value: Any, raw: bytes) -> bytes:
    container: Any = doc
    start = _ws(buf, 0)
    end = len(buf.rstrip())
    for depth, comp in enumerate(comps):
        rest = comps[depth + 1 :]
        if isinstance(container, list):
            if not (comp.isdigit() and int(comp) < len(container)):
                return buf  # out-of-range index: documented no-op
        elif comp not in container:
            container[comp] = _nested_doc(rest, value)
            return _append_member(buf, end, comp, _nested(rest, raw))
        found = _child(buf, start, comp)
        assert found is not None
        _, vs, ve = found
        key: Any = int(comp) if isinstance(container, list) else comp
        if not rest or buf[vs] not in _OPEN:
            if buf[vs:ve] == (new := _nested(rest, raw)):
                return buf
            container[key] = _nested_doc(rest, value)
            return buf[:vs] + new + buf[ve:]
        container, start, end = container[key], vs, ve
    return buf  # pragma: no cover - the loop always returns


def _nested_doc(comps: Sequence[str], value: Any) -> Any:
    for comp in reversed(comps):
        value = {comp: value}
    return value


def _dumps(key: str, value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise RequestRejected(f"error setting parameter {key} in request: {exc}") from exc


def _parse(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest("invalid JSON body: expected an object")
    return doc


def rewrite_model(body: bytes, new_model: str) -> bytes:
    """Set the top-level `model` to `new_model`; the same object back if already equal."""
    return _set(body, _parse(body), ["model"], new_model, orjson.dumps(new_model))


def apply_json_filters(
    body: bytes,
    *,
    use_model_name: str,
    strip_params: Sequence[str],
    set_params: Mapping[str, Any],
    set_params_by_id: Mapping[str, Any] | None,
) -> bytes:
    """Apply useModelName → stripParams → setParams → setParamsByID to a JSON body.

    `set_params_by_id` is the entry for the *requested* name (or None). Strip names are
    normalised (see `normalise_strip_params`); set keys apply in sorted order; any path
    whose first component is `model` is ignored. Returns `body` itself when nothing changes.
    Raises `BadRequest` for a body that is not a JSON object, `RequestRejected` (500) for
    a configured value that cannot be serialised.
    """
    strip = [split_path(n) for n in normalise_strip_params(strip_params)]
    sets = [(k, v) for k, v in sorted(set_params.items()) if k.strip()]
    sets += sorted((set_params_by_id or {}).items())
    sets = [(k, v) for k, v in sets if split_path(k)[0] != "model"]
    strip = [p for p in strip if p[0] != "model"]
    if not (use_model_name or strip or sets):
        return body
    doc = _parse(body)
    out = body
    if use_model_name:
        out = _set(out, doc, ["model"], use_model_name, orjson.dumps(use_model_name))
    for comps in strip:
        out = _strip(out, doc, comps)
    for key, value in sets:
        out = _set(out, doc, split_path(key), value, _dumps(key, value))
    return body if out == body else out


def shape_body(
    kind: BodyKind,
    body: bytes,
    content_type: str,
    *,
    use_model_name: str,
    strip_params: Sequence[str],
    set_params: Mapping[str, Any],
    set_params_by_id: Mapping[str, Any] | None,
) -> tuple[bytes, dict[str, str]]:
    """Apply a model's (or peer's) request shaping to a body of any kind.

    JSON bodies get every filter; multipart forms only the `model` rewrite (rebuilt only when
    needed). Returns the body and the headers that must change with it (a new multipart
    Content-Type), to be sent upstream in place of the client's.
    """
    if kind is BodyKind.JSON:
        shaped = apply_json_filters(
            body,
            use_model_name=use_model_name,
            strip_params=strip_params,
            set_params=set_params,
            set_params_by_id=set_params_by_id,
        )
        return shaped, {}
    if kind is BodyKind.MULTIPART and use_model_name:
        shaped, new_type = rewrite_multipart_model(body, content_type, use_model_name)
        return shaped, ({"Content-Type": new_type} if new_type != content_type else {})
    return body, {}
