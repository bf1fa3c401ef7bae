"""JSON body filters: semantics, byte preservation of untouched text, garbage handling."""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.errors import BadRequest, RequestRejected
from llamaswap.server.filters import apply_json_filters, rewrite_model, split_path


def run(
    body: bytes,
    *,
    model: str = "",
    strip: tuple[str, ...] = (),
    set_: dict[str, Any] | None = None,
    by_id: dict[str, Any] | None = None,
) -> bytes:
    return apply_json_filters(
        body,
        use_model_name=model,
        strip_params=strip,
        set_params=set_ or {},
        set_params_by_id=by_id,
    )


def test_no_filters_returns_same_object_without_parsing() -> None:
    body = b"not even json"
    assert run(body) is body


def test_filters_that_change_nothing_return_same_object() -> None:
    body = b'{"model": "m", "t": 1.0, "k": {"x": [1]}}'
    assert run(body, strip=("absent", "k.y", "model"), set_={"t": 1.0, "k.x": [1]}) is body
    assert run(body, model="m") is body
    assert rewrite_model(body, "m") is body


def test_order_and_precedence() -> None:
    body = b'{"model":"alias","temperature":0.1,"top_k":5}'
    out = run(
        body,
        model="real",
        strip=("top_k", " temperature ", ""),
        set_={"temperature": 0.7, "model": "nope"},
        by_id={"temperature": 0.9, "chat_template_kwargs.enable_thinking": False},
    )
    assert orjson.loads(out) == {
        "model": "real",
        "temperature": 0.9,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def test_untouched_text_is_byte_identical() -> None:
    body = b'{\n  "model" : "a",\n  "n": 1.50,\n  "s": "\\u00e9\\n",\n  "t": 1e3\n}'
    out = run(body, model="b", set_={"t": 2})
    assert out == body.replace(b'"a"', b'"b"').replace(b"1e3", b"2")


def test_nested_paths_and_escaped_dots() -> None:
    body = b'{"a":{"b":{"c":1,"d":2}},"x.y":3,"arr":[{"q":1},2]}'
    out = run(body, strip=("a.b.c", "x\\.y", "arr.0.q"), set_={"a.b.e": True, "arr.1": 7})
    assert out == b'{"a":{"b":{"d":2,"e":true}},"arr":[{},7]}'


def test_set_through_scalar_replaces_it_and_out_of_range_index_is_ignored() -> None:
    body = b'{"a":1,"arr":[1]}'
    out = run(body, set_={"a.b": 1, "arr.5": 1, "arr.x": 1})
    assert orjson.loads(out) == {"a": {"b": 1}, "arr": [1]}


def test_strip_removes_every_duplicate_key() -> None:
    body = b'{"a":1,"b":2,"a":3}'
    assert run(body, strip=("a",)) == b'{"b":2}'


def test_strip_only_member_and_last_member() -> None:
    assert run(b'{ "a" : 1 }', strip=("a",)) == b"{  }"
    assert run(b'{"b":0, "a":1}', strip=("a",)) == b'{"b":0}'


def test_split_path() -> None:
    assert split_path("a.b\\.c.d") == ["a", "b.c", "d"]


@pytest.mark.parametrize("body", [b"", b"[1]", b'"x"', b"{", b'{"a":1}}', b"\xff"])
def test_bad_bodies_are_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        run(body, set_={"a": 1})


def test_unserialisable_value_is_500() -> None:
    with pytest.raises(RequestRejected, match="error setting parameter a in request"):
        run(b"{}", set_={"a": object()})


# --- property tests -------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "model", "x y", "ü", "0", 'q"t'])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
SEPS = st.sampled_from([(",", ":"), (", ", ": "), (",\n  ", " : ")])


def serialise(doc: dict[str, Any], seps: tuple[str, str]) -> tuple[bytes, dict[str, bytes]]:
    """Top-level members with chosen separators; returns each member's verbatim text."""
    spans = {k: orjson.dumps(k) + seps[1].encode() + orjson.dumps(v) for k, v in doc.items()}
    return b"{" + seps[0].encode().join(spans.values()) + b"}", spans


def model_get(d: Any, comps: list[str]) -> tuple[Any, Any] | None:
    for comp in comps:
        if isinstance(d, dict) and comp in d:
            d = d[comp]
        elif isinstance(d, list) and comp.isdigit() and int(comp) < len(d):
            d = d[int(comp)]
        else:
            return None
    return (d,)


def model_strip(d: dict[str, Any], comps: list[str]) -> None:
    parent = model_get(d, comps[:-1])
    if parent is None:
        return
    p, last = parent[0], comps[-1]
    if isinstance(p, dict):
        p.pop(last, None)
    elif isinstance(p, list) and last.isdigit() and int(last) < len(p):
        del p[int(last)]


def model_set(d: Any, comps: list[str], value: Any) -> None:
    for i, comp in enumerate(comps):
        rest = comps[i + 1 :]
        if isinstance(d, list):
            if not (comp.isdigit() and int(comp) < len(d)):
                return
            key: Any = int(comp)
        else:
            key = comp
            if comp not in d:
                d[comp] = nest(rest, value)
                return
        if not rest or not isinstance(d[key], (dict, list)):
            d[key] = nest(rest, value)
            return
        d = d[key]


def nest(comps: list[str], value: Any) -> Any:
    for comp in reversed(comps):
        value = {comp: value}
    return value


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(KEYS, VALUES, max_size=6),
    SEPS,
    st.sampled_from(["", "new-model"]),
    st.lists(PATHS, max_size=3),
    st.dictionaries(PATHS, VALUES, max_size=3),
    st.none() | st.dictionaries(PATHS, VALUES, max_size=2),
)
def test_filters_match_the_model_and_keep_untouched_text(
    doc: dict[str, Any],
    seps: tuple[str, str],
    model: str,
    strip: list[str],
    set_: dict[str, Any],
    by_id: dict[str, Any] | None,
) -> None:
    body, spans = serialise(doc, seps)
    out = run(body, model=model, strip=tuple(strip), set_=set_, by_id=by_id)

    expected = copy.deepcopy(doc)
    if model:
        expected["model"] = model
    for path in sorted({p.strip() for p in strip} - {"", "model"}):
        comps = split_path(path)
        if comps[0] != "model":
            model_strip(expected, comps)
    for key, value in [*sorted(set_.items()), *sorted((by_id or {}).items())]:
        comps = split_path(key)
        if comps[0] != "model":
            model_set(expected, comps, value)
    assert orjson.loads(out) == expected

    touched = {split_path(p)[0] for p in [*strip, *set_, *(by_id or {})]}
    if model:
        touched.add("model")
    for key, text in spans.items():
        if key not in touched:
            assert text in out
    if out == body:
        assert out is body


@given(st.binary(max_size=100) | st.text(max_size=100).map(str.encode))
def test_garbage_raises_only_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        run(body, model="m", strip=("a",), set_={"b.c": 1})


def test_one_megabyte_body_timing() -> None:
    messages = [{"role": "user", "content": "hello é " * 10} for _ in range(10_000)]
    body = orjson.dumps({"model": "alias", "messages": messages, "temperature": 0.1})
    assert len(body) > 1_000_000
    start = time.perf_counter()
    out = run(body, model="real", strip=("top_k",), set_={"temperature": 0.7, "x.y": 1})
    elapsed = time.perf_counter() - start
    assert orjson.loads(out)["temperature"] == 0.7
    assert elapsed < 0.5  # generous for shared CI; ~tens of ms measured


def test_deeply_nested_values_are_skipped_correctly() -> None:
    deep = b"[" * 40 + b'"]}"' + b"]" * 40
    body = b'{"a":' + deep + b',"b":{"c":' + deep + b'},"d":1}'
    out = run(body, set_={"d": 2, "b.e": 3})
    assert out == body.replace(b'"d":1', b'"d":2').replace(deep + b"}", deep + b',"e":3}')
