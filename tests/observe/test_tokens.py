"""Token metrics extraction (spec §6.1 [H]): pure parsing of finished responses."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.observe.tokens import (
    ParsedResponse,
    TokenMetrics,
    decode_body,
    error_message,
    filter_accept_encoding,
    parse_response,
)

SSE = "text/event-stream"
JSON = "application/json"


def parse(
    body: bytes | str | Any,
    *,
    status: int = 200,
    content_type: str = JSON,
    encoding: str = "",
    path: str = "/v1/chat/completions",
    wall_ms: int = 100,
) -> ParsedResponse:
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return parse_response(
        path=path,
        status=status,
        content_type=content_type,
        content_encoding=encoding,
        body=body,
        wall_ms=wall_ms,
    )


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += b"data: " + data.encode() + b"\n\n"
    return out


MINIMAL = TokenMetrics()


# ---- JSON bodies ----------------------------------------------------------------------------


def test_openai_usage_without_timings_leaves_unknowns_at_minus_one() -> None:
    got = parse({"usage": {"prompt_tokens": 25, "completion_tokens": 10}})
    assert got.tokens == TokenMetrics(
        cache_tokens=-1,
        draft_tokens=-1,
        draft_acc_tokens=-1,
        input_tokens=25,
        output_tokens=10,
        prompt_per_second=-1.0,
        tokens_per_second=-1.0,
    )
    assert got.duration_ms == 100
    assert got.error_msg == ""


def test_anthropic_style_names_and_cache_fields() -> None:
    usage = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 4}
    got = parse({"usage": usage}).tokens
    assert (got.input_tokens, got.output_tokens, got.cache_tokens) == (7, 3, 4)


@pytest.mark.parametrize("details", ["input_tokens_details", "prompt_tokens_details"])
def test_cached_tokens_from_details(details: str) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 1, details: {"cached_tokens": 6}}
    assert parse({"usage": usage}).tokens.cache_tokens == 6


def test_prompt_tokens_win_over_input_tokens() -> None:
    usage = {"prompt_tokens": 5, "input_tokens": 99, "completion_tokens": 2, "output_tokens": 98}
    got = parse({"usage": usage}).tokens
    assert (got.input_tokens, got.output_tokens) == (5, 2)


def test_llamacpp_timings_override_usage_and_give_speeds() -> None:
    body = {
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "timings": {
            "prompt_n": 25,
            "prompt_ms": 130.6,
            "prompt_per_second": 191.5,
            "predicted_n": 10,
            "predicted_ms": 170.2,
            "predicted_per_second": 58.75,
            "cache_n": 12,
            "draft_n": 8,
            "draft_n_accepted": 6,
        },
    }
    got = parse(body, wall_ms=100)
    assert got.tokens == TokenMetrics(12, 8, 6, 25, 10, 191.5, 58.75)
    assert got.duration_ms == 300  # prompt_ms + predicted_ms beats the wall clock


def test_wall_clock_wins_when_longer_than_timings() -> None:
    body = {"timings": {"prompt_n": 1, "prompt_ms": 10, "predicted_n": 1, "predicted_ms": 10}}
    assert parse(body, wall_ms=5000).duration_ms == 5000


def test_draft_counters_need_both_fields() -> None:
    body = {"timings": {"prompt_n": 1, "predicted_n": 1, "draft_n": 8}}
    got = parse(body).tokens
    assert (got.draft_tokens, got.draft_acc_tokens) == (-1, -1)
    assert got.cache_tokens == -1  # no cache_n and no usage cache field


def test_infill_takes_timings_of_the_last_array_element() -> None:
    body = [
        {"content": "a", "timings": {"prompt_n": 1, "predicted_n": 1}},
        {"content": "b", "timings": {"prompt_n": 30, "predicted_n": 4, "predicted_per_second": 9}},
    ]
    got = parse(body, path="/infill").tokens
    assert (got.input_tokens, got.output_tokens, got.tokens_per_second) == (30, 4, 9.0)
    assert parse(body, path="/v1/completions").tokens == MINIMAL  # arrays elsewhere: nothing


def test_vllm_metrics_speeds_and_speculative_decoding() -> None:
    body = {
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 20},
        },
        "metrics": {
            "time_to_first_token_ms": 250,
            "mean_itl_ms": 20,
            "speculative_decoding": {"num_draft_tokens": 40, "num_accepted_draft_tokens": 30},
        },
    }
    got = parse(body).tokens
    assert got.prompt_per_second == pytest.approx((120 - 20) / 0.25)
    assert got.tokens_per_second == pytest.approx(50.0)
    assert (got.draft_tokens, got.draft_acc_tokens) == (40, 30)


def test_vllm_partial_metrics_keep_unknowns() -> None:
    body = {
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "metrics": {"mean_itl_ms": 0, "speculative_decoding": {"num_draft_tokens": 3}},
    }
    got = parse(body).tokens
    assert got.prompt_per_second == -1.0
    assert got.tokens_per_second == -1.0
    assert (got.draft_tokens, got.draft_acc_tokens) == (-1, -1)


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"choices":[]}', b"[1,2]", b'"just a string"', b"null"]
)
def test_no_usage_data_gives_a_minimal_row(body: bytes) -> None:
    got = parse(body, wall_ms=42)
    assert got.tokens == MINIMAL
    assert got.duration_ms == 42
    assert got.error_msg == ""


# ---- SSE bodies -----------------------------------------------------------------------------


def test_stream_last_nonzero_usage_wins_and_last_timings() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "hi"}}]},
        {"usage": {"prompt_tokens": 11, "completion_tokens": 0}},
        {"usage": {"prompt_tokens": 0, "completion_tokens": 7}},
        "[DONE]",
    )
    got = parse(body, content_type=SSE).tokens
    assert (got.input_tokens, got.output_tokens) == (11, 7)
    assert got.tokens_per_second == -1.0


def test_stream_usage_under_response_and_message() -> None:
    body = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 13, "output_tokens": 1}}},
        {"type": "message_delta", "usage": {"output_tokens": 21}},
        {"type": "response.completed", "response": {"usage": {"cache_read_input_tokens": 5}}},
    )
    got = parse(body, content_type="text/event-stream; charset=utf-8").tokens
    assert (got.input_tokens, got.output_tokens, got.cache_tokens) == (13, 21, 5)


def test_stream_timings_last_event_wins() -> None:
    body = sse(
        {"timings": {"prompt_n": 1, "predicted_n": 1, "predicted_per_second": 1}},
        {"timings": {"prompt_n": 5, "predicted_n": 6, "predicted_per_second": 77.5}},
    )
    got = parse(body, content_type=SSE).tokens
    assert (got.input_tokens, got.output_tokens, got.tokens_per_second) == (5, 6, 77.5)


def test_stream_tolerates_crlf_no_space_event_lines_and_junk() -> None:
    body = (
        b"event: message\r\ndata:{not json}\r\n\r\n: comment\r\n"
        b'data:{"usage":{"prompt_tokens":3,"completion_tokens":4}}\r\n\r\n'
        b"data: 17\r\n\r\n"
    )
    got = parse(body, content_type=SSE).tokens
    assert (got.input_tokens, got.output_tokens) == (3, 4)


def test_stream_usage_under_an_escaped_key_is_still_found() -> None:
    # Events without a usage key are skipped unparsed; a key spelled with JSON escapes is not.
    body = (
        b'data: {"choices": [{"delta": {"content": "usage"}}]}\n\n'
        b'data: {"\\u0075sage": {"prompt_tokens": 8, "completion_tokens": 9}}\n\n'
        b'data: {"choices": [], "usage_note": "\\"usage\\" in a value"}\n\n'
    )
    got = parse(body, content_type=SSE).tokens
    assert (got.input_tokens, got.output_tokens) == (8, 9)


def test_stream_without_usage_is_minimal() -> None:
    body = sse({"choices": [{"delta": {"content": "hi"}}]}, "[DONE]")
    assert parse(body, content_type=SSE).tokens == MINIMAL


def test_stream_vllm_metrics_last() -> None:
    body = sse(
        {"usage": {"prompt_tokens": 10, "completion_tokens": 4}},
        {"metrics": {"mean_itl_ms": 50}},
        {"metrics": {"mean_itl_ms": 25}},
    )
    assert parse(body, content_type=SSE).tokens.tokens_per_second == pytest.approx(40.0)


# ---- encodings ------------------------------------------------------------------------------


def test_gzip_and_deflate_bodies_are_decoded() -> None:
    raw = json.dumps({"usage": {"prompt_tokens": 8, "completion_tokens": 2}}).encode()
    for encoding, encoded in (
        ("gzip", gzip.compress(raw)),
        ("deflate", zlib.compress(raw)),
        ("deflate", zlib.compress(raw)[2:-4]),  # raw deflate, as some servers send
        ("GZip ", gzip.compress(raw)),
    ):
        got = parse(encoded, encoding=encoding)
        assert got.tokens.input_tokens == 8, encoding
        assert got.body == raw


def test_unknown_encoding_is_taken_as_plain() -> None:
    raw = json.dumps({"usage": {"prompt_tokens": 8}}).encode()
    assert parse(raw, encoding="br").tokens.input_tokens == 8


def test_decompression_failure_on_200_is_a_minimal_row_with_error() -> None:
    got = parse(b"definitely not gzip", encoding="gzip")
    assert got.tokens == MINIMAL
    assert got.error_msg.startswith("response decompression failed: ")


def test_truncated_gzip_is_a_decompression_failure() -> None:
    data = gzip.compress(b'{"usage":{"prompt_tokens":1}}' * 50)
    got = parse(data[: len(data) // 2], encoding="gzip")
    assert got.error_msg.startswith("response decompression failed: ")


def test_decode_body_passes_identity_through() -> None:
    assert decode_body(b"abc", "") == b"abc"
    assert decode_body(b"", "gzip") == b""


def test_accept_encoding_filter_keeps_gzip_and_deflate_only() -> None:
    assert filter_accept_encoding("gzip, deflate, br, zstd") == "gzip, deflate"
    assert filter_accept_encoding("br;q=1.0, GZIP;q=0.5, identity") == "GZIP;q=0.5"
    assert filter_accept_encoding("br") == ""
    assert filter_accept_encoding("") == ""


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": {"message": "model exploded", "type": "x"}}, "model exploded"),
        ({"error": "plain error"}, "plain error"),
        ({"error": {"message": ""}, "message": "fallback message"}, "fallback message"),
        ({"detail": "fastapi style"}, "fastapi style"),
        ({"error": {"code": 3}, "detail": "   "}, "503 Service Unavailable"),
        ("not json at all", "503 Service Unavailable"),
        ("", "503 Service Unavailable"),
    ],
)
def test_error_message_extraction(body: Any, expected: str) -> None:
    got = parse(body, status=503)
    assert got.error_msg == expected
    assert got.tokens == MINIMAL


def test_error_with_usage_still_records_no_tokens() -> None:
    got = parse({"error": "bad", "usage": {"prompt_tokens": 5}}, status=400)
    assert (got.tokens, got.error_msg) == (MINIMAL, "bad")


def test_long_error_message_is_cut_at_500_chars() -> None:
    got = parse({"error": {"message": "x" * 800}}, status=500)
    assert got.error_msg == "x" * 500 + "..."
    assert parse({"error": "y" * 500}, status=500).error_msg == "y" * 500


def test_unknown_status_text() -> None:
    assert error_message(599, b"") == "599"


def test_error_body_is_decoded_before_extraction() -> None:
    body = gzip.compress(b'{"error":{"message":"compressed failure"}}')
    assert parse(body, status=500, encoding="gzip").error_msg == "compressed failure"


def test_undecodable_error_body() -> None:
    got = parse(b"garbage", status=500, encoding="gzip")
    assert got.error_msg.startswith("response decode failed: ")


def test_odd_json_values_do_not_break_parsing() -> None:
    body = {
        "usage": {"prompt_tokens": "12", "completion_tokens": True, "cache_read_input_tokens": 2.9},
        "timings": {"prompt_n": 1e300, "predicted_ms": "x", "predicted_per_second": None},
    }
    got = parse(body).tokens
    assert got.output_tokens == 0
    assert got.cache_tokens == 2
    assert got.input_tokens == 2**62  # clamped, not an overflow
    assert got.tokens_per_second == 0.0


# ---- never raises ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)
usage_like = st.fixed_dictionaries(
    {},
    optional={
        "usage": json_values,
        "timings": json_values,
        "metrics": json_values,
        "error": json_values,
        "message": json_values,
        "detail": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=400),
    status=st.sampled_from([200, 400, 500, 599, 100]),
    content_type=st.sampled_from([JSON, SSE, ""]),
    encoding=st.sampled_from(["", "gzip", "deflate", "br"]),
    path=st.sampled_from(["/infill", "/v1/chat/completions"]),
)
def test_never_raises_on_arbitrary_bytes(
    body: bytes, status: int, content_type: str, encoding: str, path: str
) -> None:
    got = parse(body, status=status, content_type=content_type, encoding=encoding, path=path)
    assert got.duration_ms >= 100
    assert (got.error_msg != "") == (status != 200) or got.error_msg.startswith("response")


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(usage_like, max_size=5),
    as_stream=st.booleans(),
    status=st.sampled_from([200, 500]),
)
def test_never_raises_on_arbitrary_json_shapes(
    events: list[dict[str, Any]], as_stream: bool, status: int
) -> None:
    if as_stream:
        body = sse(*events)
        content_type = SSE
    else:
        body = json.dumps(events[-1] if events else {}).encode()
        content_type = JSON
    got = parse(body, status=status, content_type=content_type)
    assert isinstance(got.tokens.prompt_per_second, float)
    assert len(got.error_msg) <= 503
