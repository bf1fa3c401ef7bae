"""The capture buffer: FIFO by size, masks per path, JSON with base64 bodies (spec §6.1)."""

from __future__ import annotations

import base64

import pytest

from llamaswap.observe.captures import (
    MIB,
    Capture,
    CaptureBuffer,
    CaptureFields,
    capture_fields,
)


def cap(capture_id: int, body_size: int = 10, path: str = "/p") -> Capture:
    return Capture(capture_id, path, {}, b"x" * body_size, {}, b"")


def test_size_counts_path_headers_and_bodies() -> None:
    c = Capture(1, "/abc", {"A": "bb"}, b"1234", {"Ccc": "d"}, b"56")
    assert c.size() == len("/abc") + len("A") + len("bb") + len("Ccc") + len("d") + 4 + 2


def test_fifo_eviction_keeps_the_newest_within_capacity() -> None:
    buf = CaptureBuffer(100)
    for i in range(1, 6):
        assert buf.add(cap(i, 28))  # 30 bytes each with the path
    assert [i for i in range(1, 6) if i in buf] == [3, 4, 5]
    assert buf.used == 90
    assert buf.get(1) is None
    assert buf.get(5) is not None


def test_a_capture_bigger_than_the_buffer_is_skipped_and_evicts_nothing() -> None:
    buf = CaptureBuffer(100)
    buf.add(cap(1, 10))
    assert not buf.add(cap(2, 200))
    assert 2 not in buf
    assert 1 in buf
    assert buf.add(cap(3, 98))  # exactly the capacity fits, evicting the rest
    assert (len(buf), buf.used) == (1, 100)


def test_disabled_buffer_keeps_nothing() -> None:
    buf = CaptureBuffer.from_mib(0)
    assert not buf.enabled
    assert not buf.add(cap(1))
    assert len(buf) == 0
    assert CaptureBuffer.from_mib(5).capacity == 5 * MIB


def test_resize_evicts_oldest_and_readding_an_id_replaces_it() -> None:
    buf = CaptureBuffer(1000)
    for i in range(1, 4):
        buf.add(cap(i, 98))
    buf.add(cap(2, 48))
    assert buf.used == 100 + 100 + 50
    buf.resize(120)
    assert [i for i in (1, 2, 3) if i in buf] == [2]  # 3 was added before the new 2
    buf.resize(0)
    assert (len(buf), buf.used, buf.enabled) == (0, 0, False)


def test_json_has_base64_bodies_and_null_for_parts_not_captured() -> None:
    c = Capture.build(
        7,
        "/v1/audio/speech",
        capture_fields("/v1/audio/speech"),
        req_headers={"Content-Type": "application/json"},
        req_body=b'{"input":"hi"}',
        resp_headers={"Content-Type": "audio/wav"},
        resp_body=b"\x00\x01RIFF",
    )
    assert c.as_json() == {
        "id": 7,
        "req_path": "/v1/audio/speech",
        "req_headers": {"Content-Type": "application/json"},
        "req_body": base64.b64encode(b'{"input":"hi"}').decode(),
        "resp_headers": {"Content-Type": "audio/wav"},
        "resp_body": None,
    }
    assert Capture(1, "/x", req_body=b"").as_json()["req_body"] == ""


F = CaptureFields


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/chat/completions", F.ALL),
        ("/v/chat/completions", F.ALL),
        ("/v1/audio/speech", F.REQ_HEADERS | F.REQ_BODY | F.RESP_HEADERS),
        ("/v1/audio/voices", F.REQ_HEADERS | F.RESP_HEADERS | F.RESP_BODY),
        ("/v1/audio/transcriptions", F.REQ_HEADERS | F.RESP_HEADERS | F.RESP_BODY),
        ("/v1/images/generations", F.REQ_HEADERS | F.REQ_BODY | F.RESP_HEADERS),
        ("/v1/images/edits", F.REQ_HEADERS | F.RESP_HEADERS),
        ("/sdapi/v1/txt2img", F.REQ_HEADERS | F.REQ_BODY | F.RESP_HEADERS),
        ("/sdapi/v1/img2img", F.REQ_HEADERS | F.RESP_HEADERS),
    ],
)
def test_capture_masks(path: str, fields: CaptureFields) -> None:
    assert capture_fields(path) == fields


def test_failed_exchange_keeps_the_request_only() -> None:
    assert capture_fields("/v1/chat/completions", 500) == F.REQ_HEADERS | F.REQ_BODY
    assert capture_fields("/v1/images/edits", 400) == F.REQ_HEADERS
