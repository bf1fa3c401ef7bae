"""API key checking, the 401 answer, the auth column, CORS preflight, header redaction."""

from __future__ import annotations

import base64

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from llamaswap.server.auth import (
    ApiKeyChecker,
    preflight_response,
    redact_headers,
    route_needs_auth,
    sanitize_header_names,
    unauthorized_response,
)

KEYS = ApiKeyChecker(["sk-one", "sk-two"])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"Authorization": "Bearer sk-one"}, True),
        ({"authorization": "bearer sk-two"}, True),
        ({"Authorization": "BEARER   sk-two "}, True),
        ({"Authorization": basic("anyone", "sk-one")}, True),
        ({"Authorization": basic("", "sk-two")}, True),
        ({"Authorization": "basic " + base64.b64encode(b"u:sk-one").decode()}, True),
        ({"x-api-key": "sk-one"}, True),
        ({"X-Api-Key": "sk-two"}, True),
        ({}, False),
        ({"Authorization": "Bearer sk-three"}, False),
        ({"Authorization": "Bearer "}, False),
        ({"Authorization": basic("sk-one", "wrong")}, False),
        ({"Authorization": "Basic !!!not-base64"}, False),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, False),
        ({"Authorization": "Basic " + base64.b64encode(b"u:\xff").decode()}, False),
        # Priority: a present Authorization source wins over x-api-key.
        ({"Authorization": "Bearer wrong", "x-api-key": "sk-one"}, False),
        ({"Authorization": "Token sk-one", "x-api-key": "sk-one"}, True),
        ({"x-api-key": "sk-on"}, False),
        ({"x-api-key": "sk-one-more"}, False),
        ({"x-api-key": "ünï"}, False),
    ],
)
def test_check(headers: dict[str, str], ok: bool) -> None:
    assert KEYS.check(headers) is ok


def test_check_with_multidict_headers() -> None:
    headers = CIMultiDictProxy(CIMultiDict({"AUTHORIZATION": "Bearer sk-one"}))
    assert KEYS.check(headers)


def test_disabled_without_keys() -> None:
    checker = ApiKeyChecker([])
    assert not checker.enabled
    assert checker.check({})
    assert KEYS.enabled


def test_empty_configured_key_never_matches_empty_offer() -> None:
    checker = ApiKeyChecker(["", "k"])
    assert not checker.check({"x-api-key": ""})
    assert checker.check({"x-api-key": "k"})


def test_unauthorized_response() -> None:
    resp = unauthorized_response("application/json")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
    assert isinstance(resp.body, bytes)
    err = orjson.loads(resp.body)["error"]
    assert err["message"] == "unauthorized: invalid or missing API key"
    assert (err["type"], err["code"]) == ("authentication_error", "unauthorized")
    plain = unauthorized_response("text/plain")
    assert plain.text == "llama-swap: unauthorized: invalid or missing API key"


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", "/health", False),
        ("GET", "/wol-health", False),
        ("GET", "/", False),
        ("GET", "/favicon.ico", False),
        ("GET", "/upstream", False),
        ("POST", "/upstream", True),
        ("GET", "/upstream/m1/", True),
        ("OPTIONS", "/v1/chat/completions", False),
        ("options", "/anything", False),
        ("GET", "/ui", False),
        ("GET", "/ui/index.html", False),
        ("POST", "/ui/index.html", True),
        ("GET", "/uiother", True),
        ("POST", "/v1/chat/completions", True),
        ("GET", "/v1/models", True),
        ("GET", "/metrics", True),
        ("GET", "/api/events", True),
        ("GET", "/running", True),
        ("GET", "/healthz", True),
    ],
)
def test_route_needs_auth(method: str, path: str, needs: bool) -> None:
    assert route_needs_auth(method, path) is needs


def test_preflight_defaults() -> None:
    resp = preflight_response({})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert (
        resp.headers["Access-Control-Allow-Headers"]
        == "Content-Type, Authorization, Accept, X-Requested-With"
    )
    assert resp.headers["Access-Control-Max-Age"] == "86400"


def test_preflight_echoes_sanitised_request_headers() -> None:
    resp = preflight_response(
        {"access-control-request-headers": "x-custom ,content-type, bad header, evil\r\nx: y, ,"}
    )
    assert resp.headers["Access-Control-Allow-Headers"] == "x-custom, content-type"
    only_bad = preflight_response({"Access-Control-Request-Headers": "a b, (c)"})
    assert only_bad.headers["Access-Control-Allow-Headers"].startswith("Content-Type")


def test_sanitize_header_names() -> None:
    assert sanitize_header_names("A_b, c.d, e~f, ü, g:h") == "A_b, c.d, e~f"


def test_redact_headers() -> None:
    headers = CIMultiDict(
        [
            ("Authorization", "Bearer sk"),
            ("Proxy-Authorization", "x"),
            ("Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Set-Cookie", "c=3"),
            ("X-API-Key", "sk"),
            ("Accept", "a"),
            ("Accept", "b"),
        ]
    )
    assert redact_headers(headers) == {
        "Authorization": "[REDACTED]",
        "Proxy-Authorization": "[REDACTED]",
        "Cookie": "[REDACTED]",
        "Set-Cookie": "[REDACTED]",
        "X-API-Key": "[REDACTED]",
        "Accept": "a, b",
    }
    assert redact_headers([("cookie", "z"), ("x", "1")]) == {"cookie": "[REDACTED]", "x": "1"}
