"""Model extraction from JSON, multipart, urlencoded forms, queries and /upstream paths."""

from __future__ import annotations

import contextlib
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamaswap.errors import BadRequest
from llamaswap.server.extract import (
    BodyKind,
    RequestShape,
    extract_model_from_json,
    extract_model_from_multipart,
    find_model_in_path,
    rewrite_multipart_model,
    shape_request,
    split_multipart,
)

CT = "multipart/form-data; boundary=XyZ"
FILE_BYTES = bytes(range(256)) * 4 + b"\r\n--Xy not a boundary\r\n"


def form(*parts: tuple[str, bytes, str | None], boundary: str = "XyZ") -> bytes:
    out = b"preamble\r\n"
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"'
        if filename:
            disp += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue".encode()


# --- JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"m1","stream":true}', ("m1", True)),
        (b'{"model":"m1","stream":"true"}', ("m1", False)),
        (b'{"stream":true}', (None, True)),
        (b'{"model":""}', (None, False)),
        (b'{"model":42}', (None, False)),
        (b"[1,2]", (None, False)),
        (b"", (None, False)),
        (b"  \n", (None, False)),
        ('{"model":"ü/ß"}'.encode(), ("ü/ß", False)),
    ],
)
def test_extract_model_from_json(body: bytes, expected: tuple[str | None, bool]) -> None:
    assert extract_model_from_json(body) == expected


@pytest.mark.parametrize("body", [b"{", b'{"model":"m"', b"\xff\xfe", b"nope", b'{"a":1}x'])
def test_malformed_json_is_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="invalid JSON body"):
        extract_model_from_json(body)


@given(st.binary(max_size=200))
def test_json_garbage_raises_only_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        extract_model_from_json(body)


def test_one_megabyte_body_is_fast() -> None:
    messages = [{"role": "user", "content": "x" * 1000 + str(i)} for i in range(1000)]
    body = orjson.dumps({"model": "big", "messages": messages, "stream": True})
    assert len(body) > 1_000_000
    start = time.perf_counter()
    for _ in range(10):
        assert extract_model_from_json(body) == ("big", True)
    per_call = (time.perf_counter() - start) / 10
    assert per_call < 0.05  # generous: ~1 ms measured; guards against quadratic regressions


# --- multipart ------------------------------------------------------------------------


def test_multipart_model_field() -> None:
    body = form(("file", FILE_BYTES, "a.wav"), ("model", b"whisper", None))
    assert extract_model_from_multipart(body, CT) == "whisper"


def test_multipart_quoted_boundary_and_file_named_model_ignored() -> None:
    body = form(("model", b"not-me", "model.bin"), ("model", b"w", None), boundary="a b")
    assert extract_model_from_multipart(body, 'multipart/form-data; boundary="a b"') == "w"


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (form(("file", b"x", "f")), CT),
        (b"garbage", CT),
        (form(("model", b"m", None)), "multipart/form-data"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=model\r\n\r\nm", CT),
    ],
)
def test_multipart_without_model(body: bytes, ctype: str) -> None:
    assert extract_model_from_multipart(body, ctype) is None


def test_rewrite_multipart_keeps_files_and_boundary() -> None:
    body = form(("file", FILE_BYTES, "a.wav"), ("model", b"alias", None), ("x", b"1", None))
    new, ctype = rewrite_multipart_model(body, CT, "real-name")
    assert ctype == CT
    assert new == body.replace(b"\r\n\r\nalias\r\n", b"\r\n\r\nreal-name\r\n")
    parts = split_multipart(new, "XyZ")
    assert parts is not None
    assert parts[0][1] == FILE_BYTES
    assert extract_model_from_multipart(new, ctype) == "real-name"


def test_rewrite_multipart_unchanged_returns_same_objects() -> None:
    body = form(("model", b"m", None))
    new, ctype = rewrite_multipart_model(body, CT, "m")
    assert new is body
    assert ctype is CT


def test_rewrite_multipart_adds_missing_field() -> None:
    body = form(("file", FILE_BYTES, "a.wav"))
    new, ctype = rewrite_multipart_model(body, CT, "m")
    assert ctype == CT
    parts = split_multipart(new, "XyZ")
    assert parts is not None
    assert [p[1] for p in parts] == [b"m", FILE_BYTES]


def test_rewrite_multipart_new_boundary_when_value_contains_delimiter() -> None:
    body = form(("file", FILE_BYTES, "a.wav"), ("model", b"m", None))
    new, ctype = rewrite_multipart_model(body, CT, "evil--XyZ")
    assert ctype != CT
    assert extract_model_from_multipart(new, ctype) == "evil--XyZ"
    boundary = ctype.split("boundary=")[1]
    parts = split_multipart(new, boundary)
    assert parts is not None
    assert parts[0][1] == FILE_BYTES


def test_rewrite_multipart_malformed_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="error parsing multipart form"):
        rewrite_multipart_model(b"junk", CT, "m")


@given(
    st.lists(st.tuples(st.sampled_from(["a", "model", "f"]), st.binary(max_size=64)), max_size=5),
    st.text(min_size=1, max_size=20),
)
def test_rewrite_multipart_roundtrip(fields: list[tuple[str, bytes]], new_model: str) -> None:
    parts = [(n, v.replace(b"--XyZ", b"--xyz"), "f.bin" if n == "f" else None) for n, v in fields]
    body = form(*parts)
    new, ctype = rewrite_multipart_model(body, CT, new_model)
    assert extract_model_from_multipart(new, ctype) == new_model
    boundary = ctype.split("boundary=")[1]
    files = [c for h, c in split_multipart(new, boundary) or [] if b"filename" in h]
    assert files == [v for n, v, f in parts if f]


# --- /upstream paths ------------------------------------------------------------------

KNOWN = {"m1", "author", "author/model", "a/b/c"}


def resolve(name: str) -> str | None:
    return name if name in KNOWN else None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/upstream/m1/test", ("m1", "/test")),
        ("/upstream/m1/", ("m1", "/")),
        ("/upstream/m1", ("m1", "")),
        ("/upstream/author/model/v1/chat", ("author/model", "/v1/chat")),
        ("/upstream/author/other", ("author", "/other")),
        ("/upstream/author%2Fmodel/x%2Fy/z", ("author/model", "/x%2Fy/z")),
        ("/upstream/author%2fmodel", ("author/model", "")),
        ("/upstream/a/b/c/d", ("a/b/c", "/d")),
        ("m1/x", ("m1", "/x")),
        ("/upstream/unknown/x", None),
        ("/upstream/", None),
        ("/upstream//m1", None),
    ],
)
def test_find_model_in_path(path: str, expected: tuple[str, str] | None) -> None:
    assert find_model_in_path(path, resolve) == expected


# --- choosing the source --------------------------------------------------------------


QUERY_STREAM = RequestShape(BodyKind.QUERY, "q", stream=True)


@pytest.mark.parametrize(
    ("method", "ctype", "query", "body", "expected"),
    [
        ("GET", None, {"model": "q", "stream": "true"}, b"", QUERY_STREAM),
        ("GET", "application/json", {}, b'{"model":"j"}', RequestShape(BodyKind.QUERY, None)),
        (
            "POST",
            "application/json; charset=utf-8",
            {},
            b'{"model":"j","stream":true}',
            RequestShape(BodyKind.JSON, "j", True),
        ),
        ("POST", None, {}, b' {"model":"j"}', RequestShape(BodyKind.JSON, "j")),
        ("POST", None, {}, b"model=f&x=1", RequestShape(BodyKind.FORM, "f")),
        ("POST", "", {"model": "q"}, b"{bad", RequestShape(BodyKind.FORM, "q")),
        (
            "POST",
            "application/x-www-form-urlencoded",
            {},
            b"model=a%2Fb",
            RequestShape(BodyKind.FORM, "a/b"),
        ),
        (  # curl -d '{...}' without -H: the form type, a JSON body
            "POST",
            "application/x-www-form-urlencoded",
            {"model": "q"},
            b'{"model":"j","stream":true}',
            RequestShape(BodyKind.JSON, "j", True),
        ),
        (  # not a JSON object: read as the form it claims to be
            "POST",
            "application/x-www-form-urlencoded",
            {"model": "q"},
            b'{"model":"j"',
            RequestShape(BodyKind.FORM, "q"),
        ),
        ("POST", "text/plain", {"model": "q"}, b'{"model":"j"}', RequestShape(BodyKind.FORM, "q")),
        ("POST", CT, {}, form(("model", b"w", None)), RequestShape(BodyKind.MULTIPART, "w")),
    ],
)
def test_shape_request(
    method: str, ctype: str | None, query: dict[str, str], body: bytes, expected: RequestShape
) -> None:
    assert shape_request(method, ctype, query, body) == expected


def test_shape_request_malformed_json_with_header_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        shape_request("POST", "application/json", {}, b"{")
