"""The [H] error envelope, Accept negotiation and the §3.7 429 answer."""

from __future__ import annotations

import orjson
import pytest

from llamaswap.errors import BadRequest, ModelNotFound, RequestRejected, TooManyRequests
from llamaswap.server.responses import (
    error_body,
    error_response,
    response_for_error,
    too_many_requests_response,
)


@pytest.mark.parametrize(
    ("status", "err_type", "code"),
    [
        (400, "invalid_request_error", "bad_request"),
        (401, "authentication_error", "unauthorized"),
        (403, "authentication_error", "forbidden"),
        (404, "invalid_request_error", "not_found"),
        (405, "invalid_request_error", "invalid_request"),
        (409, "invalid_request_error", "conflict"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "internal_error"),
        (502, "server_error", "bad_gateway"),
        (503, "server_error", "service_unavailable"),
        (504, "server_error", "gateway_timeout"),
        (507, "server_error", "internal_error"),
    ],
)
def test_error_body_types_and_codes(status: int, err_type: str, code: str) -> None:
    assert error_body(status, "boom") == {
        "src": "llama-swap",
        "error": {"message": "boom", "type": err_type, "param": None, "code": code},
    }


def test_code_override() -> None:
    assert error_body(429, "x", code="concurrency_limit")["error"]["code"] == "concurrency_limit"


@pytest.mark.parametrize("accept", ["", "*/*", "application/json", "APPLICATION/JSON"])
def test_json_by_default(accept: str) -> None:
    resp = error_response(accept, 404, "no model id could be identified")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert isinstance(resp.body, bytes)
    assert orjson.loads(resp.body)["error"]["message"] == "no model id could be identified"


def test_plain_text() -> None:
    resp = error_response("text/plain, */*", 500, "unspecific error: x", headers={"X-A": "1"})
    assert resp.content_type == "text/plain"
    assert resp.text == "llama-swap: unspecific error: x"
    assert resp.headers["X-A"] == "1"


def test_html_is_escaped() -> None:
    resp = error_response("text/html,application/xhtml+xml", 400, "<script>alert(1)</script>")
    assert resp.content_type == "text/html"
    assert resp.text is not None
    assert "<script>" not in resp.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in resp.text
    assert "400 Bad Request" in resp.text


def test_too_many_requests_exact() -> None:
    resp = too_many_requests_response()
    assert resp.status == 429
    assert resp.content_type == "application/json"
    assert resp.headers["Retry-After"] == "1"
    assert resp.body == (
        b'{"src":"llama-swap","error":{"message":"Too many requests","type":"rate_limit_error",'
        b'"param":null,"code":"concurrency_limit"}}'
    )


def test_response_for_error() -> None:
    too_many = response_for_error("text/plain", TooManyRequests("whatever"))
    assert too_many.content_type == "application/json"
    assert too_many.headers["Retry-After"] == "1"

    missing = response_for_error("", ModelNotFound("model not found"))
    assert missing.status == 404
    assert isinstance(missing.body, bytes)
    assert orjson.loads(missing.body)["error"]["code"] == "not_found"

    assert response_for_error("", BadRequest("bad")).status == 400
    rejected = response_for_error("text/plain", RequestRejected("unspecific error: down"))
    assert (rejected.status, rejected.text) == (500, "llama-swap: unspecific error: down")
    custom = response_for_error("", RequestRejected("busy", status=503, code="x"))
    assert custom.status == 503
    assert isinstance(custom.body, bytes)
    assert orjson.loads(custom.body)["error"]["code"] == "x"
