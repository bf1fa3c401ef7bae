"""API keys, CORS preflight and header redaction (spec §5.1 auth column, §5.8, §5.10).

Keys are read from one source, the first present in this order: `Authorization: Basic`
(the password part of `user:KEY`), `Authorization: Bearer KEY` (scheme names are
case-insensitive, as in [H]), then `x-api-key`. The candidate is compared with *every*
configured key in constant time, so neither timing nor early exit tells which key nearly
matched. With no keys configured the checker accepts everything.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence

from aiohttp import web

from llamaswap.server.responses import error_response

__all__ = [
    "DEFAULT_ALLOW_HEADERS",
    "REDACTED",
    "SENSITIVE_HEADERS",
    "UNAUTHORIZED_MESSAGE",
    "ApiKeyChecker",
    "preflight_headers",
    "preflight_response",
    "redact_headers",
    "route_needs_auth",
    "sanitize_header_names",
    "unauthorized_response",
]

UNAUTHORIZED_MESSAGE = "unauthorized: invalid or missing API key"
WWW_AUTHENTICATE = 'Basic realm="llama-swap"'
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
MAX_AGE = "86400"
REDACTED = "[REDACTED]"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# RFC 9110 `tchar`: what a header field name may consist of.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Paths anyone may reach, whatever the method ([H] §5.1 auth column).
_OPEN_PATHS = frozenset({"/", "/health", "/wol-health", "/favicon.ico"})


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup that also works for plain dicts."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return ""


def _candidate(headers: Mapping[str, str]) -> str | None:
    """The key the request offers, from the highest-priority source present."""
    auth = _header(headers, "authorization").strip()
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() == "basic" and rest:
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, colon, password = decoded.partition(":")
        return password if colon else None
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    key = _header(headers, "x-api-key").strip()
    return key or None


class ApiKeyChecker:
    """Checks requests against the configured `apiKeys`; disabled when there are none."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode("utf-8") for k in keys if k]

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured."""
        return bool(self._keys)

    def check(self, headers: Mapping[str, str]) -> bool:
        """True if auth is disabled or the request carries a configured key."""
        if not self._keys:
            return True
        candidate = _candidate(headers)
        offered = (candidate or "").encode("utf-8")
        matched = False
        for key in self._keys:
            # `|` not `or`: every key is compared, whatever matched before.
            matched |= hmac.compare_digest(offered, key)
        return matched and candidate is not None


def unauthorized_response(accept: str) -> web.Response:
    """401 with `WWW-Authenticate: Basic realm="llama-swap"` so browsers prompt for a key."""
    return error_response(
        accept, 401, UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": WWW_AUTHENTICATE}
    )


def route_needs_auth(method: str, path: str) -> bool:
    """Whether `method path` requires an API key (when keys are configured).

    Exempt: every OPTIONS (CORS preflight), `/`, `/health`, `/wol-health`, `/favicon.ico`,
    `GET`/`HEAD /upstream` (the redirect to the UI), and `GET`/`HEAD` of the UI's static
    files under `/ui`. llama-swap ([H] `62aea0e8`) protects `/ui` too, which makes a browser
    show its Basic-auth dialog before the page can ask for the key itself; the files hold no
    data (every API call they make needs the key), so we serve them openly and ask once.
    """
    method = method.upper()
    if method == "OPTIONS" or path in _OPEN_PATHS:
        return False
    return not (method in {"GET", "HEAD"} and (path == "/upstream" or _is_ui(path)))


def _is_ui(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def sanitize_header_names(value: str) -> str:
    """Keep the comma-separated names in `value` that are valid HTTP tokens, `, `-joined."""
    names = (part.strip() for part in value.split(","))
    return ", ".join(n for n in names if n and all(c in _TCHARS for c in n))


def preflight_headers(request_headers: Mapping[str, str]) -> dict[str, str]:
    """The CORS headers of a preflight answer (§5.8)."""
    requested = sanitize_header_names(_header(request_headers, "access-control-request-headers"))
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": requested or DEFAULT_ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE,
    }


def preflight_response(request_headers: Mapping[str, str]) -> web.Response:
    """204 answer to any OPTIONS request, given before auth and routing."""
    return web.Response(status=204, headers=preflight_headers(request_headers))


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Copy `headers` with sensitive values replaced by `[REDACTED]`.

    Accepts a mapping or `(name, value)` pairs (e.g. a multidict's `items()`); repeated
    names are joined with `, ` as HTTP allows.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in SENSITIVE_HEADERS:
            out[name] = REDACTED
        else:
            out[name] = f"{out[name]}, {value}" if name in out else value
    return out
