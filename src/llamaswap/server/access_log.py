"""One access log line per request, in llama-swap's format (spec §7):

    Request <client IP> "<METHOD> <path> HTTP/<v>" <status> <bytes> "<user agent>" <duration>

Logged at INFO on `llamaswap.access` (so it reaches the proxy log and stdout) once the last
byte is sent; `<bytes>` counts everything sent, headers included (nginx's `$bytes_sent`).
Health probes and scrapes (`/wol-health`, `/metrics`, `/api/performance`) are not logged.
Web UI assets (`/ui`, `/ui/…`, `/favicon.ico`) answered 2xx or 304 go to DEBUG, so opening
the UI does not flood stdout and the Logs page; their failures stay at INFO.
aiohttp calls the logger; hand `ACCESS_LOG` to its `AppRunner`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from llamaswap.server.inflight import client_ip

log = logging.getLogger("llamaswap.access")

SKIPPED_PATHS = frozenset({"/wol-health", "/metrics", "/api/performance"})
UI_PREFIX = "/ui/"
UI_PATHS = frozenset({"/ui", "/favicon.ico"})


def is_quiet_ui(path: str, status: int) -> bool:
    """A successful (or not modified) answer for a web UI asset."""
    ui = path in UI_PATHS or path.startswith(UI_PREFIX)
    return ui and (200 <= status < 300 or status == 304)


def format_duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3f}ms"
    return f"{seconds:.3f}s"


def access_line(request: web.BaseRequest, status: int, size: int, seconds: float) -> str:
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    agent = request.headers.get("User-Agent", "")
    # A request that failed before routing (malformed HTTP) is a bare BaseRequest.
    ip = client_ip(request) if isinstance(request, web.Request) else request.remote or ""
    return (
        f'Request {ip} "{request.method} {request.raw_path} {version}" '
        f'{status} {size} "{agent}" {format_duration(seconds)}'
    )


def emit(logger: logging.Logger, level: int, line: str) -> None:
    """Log `line` as it is (`%` signs included) on `logger`, already known to be enabled.

    The record is built here rather than by `logger.log`, which first walks the stack for
    the caller's file and line: a third of the line's cost, once per request. An access line
    names no source location."""
    logger.handle(logger.makeRecord(logger.name, level, "", 0, line, (), None))


class AccessLogger(AbstractAccessLogger):
    """Called by aiohttp after each response was sent."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in SKIPPED_PATHS:
            return
        size = request.writer.output_size if request.writer is not None else 0
        level = logging.DEBUG if is_quiet_ui(request.path, response.status) else logging.INFO
        if self.logger.isEnabledFor(level):
            emit(self.logger, level, access_line(request, response.status, size, time))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


# Keyword arguments for `web.AppRunner`.
ACCESS_LOG: dict[str, Any] = {"access_log_class": AccessLogger, "access_log": log}
