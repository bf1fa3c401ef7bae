"""The per-request access log line (spec §7), captured from a real in-process llamaswap."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.server.access_log import format_duration, is_quiet_ui

LINE = re.compile(
    r'^Request (?P<ip>\S+) "(?P<method>\S+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) '
    r'(?P<size>\d+) "(?P<agent>[^"]*)" (?P<duration>[\d.]+(µs|ms|s))$'
)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    lines = [r.getMessage() for r in caplog.records if r.name == "llamaswap.access"]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


async def test_each_request_gets_one_line_with_status_size_and_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llamaswap.access")
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession(headers={"User-Agent": "probe/1.0"}) as session,
    ):
        body = {"model": "a", "messages": []}
        async with session.post(f"{base}/v1/chat/completions?x=1", json=body) as resp:
            size = len(await resp.read())
        async with session.post(f"{base}/v1/chat/completions", json={"model": "nope"}) as resp:
            assert resp.status == 404
        async with session.get(f"{base}/upstream/a", allow_redirects=False) as resp:
            assert resp.status == 301
        headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
        async with session.get(f"{base}/running", headers=headers) as resp:
            running_size = len(await resp.read())
    lines = access_lines(caplog)
    got = [(m["method"], m["path"], m["status"]) for m in lines]
    assert got == [
        ("POST", "/v1/chat/completions?x=1", "200"),
        ("POST", "/v1/chat/completions", "404"),
        ("GET", "/upstream/a", "301"),
        ("GET", "/running", "200"),
    ]
    # Bytes sent, headers included: more than the body, but not by more than the headers.
    assert size < int(lines[0]["size"]) < size + 1024
    assert running_size < int(lines[3]["size"]) < running_size + 1024
    assert lines[0]["agent"] == "probe/1.0"
    assert lines[0]["ip"] == "127.0.0.1"
    assert lines[3]["ip"] == "203.0.113.9"


async def test_percent_signs_in_the_line_are_logged_as_they_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llamaswap.access")
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession(headers={"User-Agent": "probe %s %d 100%"}) as session,
        session.get(f"{base}/running?q=100%25") as resp,
    ):
        assert resp.status == 200
    (line,) = access_lines(caplog)
    assert (line["path"], line["agent"]) == ("/running?q=100%25", "probe %s %d 100%")


async def test_health_probes_and_scrapes_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llamaswap.access")
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession() as s,
    ):
        for path in ("/wol-health", "/metrics", "/health"):
            async with s.get(f"{base}{path}") as resp:
                assert resp.status == 200
    assert [m["path"] for m in access_lines(caplog)] == ["/health"]


async def test_ui_assets_that_succeed_are_logged_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="llamaswap.access")
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession() as s,
    ):
        for path, status in [
            ("/ui/", 200),
            ("/ui", 200),
            ("/ui/models", 200),
            ("/favicon.ico", 200),
            ("/ui/missing.js", 404),
            ("/running", 200),
        ]:
            async with s.get(f"{base}{path}") as resp:
                assert resp.status == status, path
    by_level: dict[int, list[str]] = {}
    for record in caplog.records:
        if record.name == "llamaswap.access":
            match = LINE.match(record.getMessage())
            assert match, record.getMessage()
            by_level.setdefault(record.levelno, []).append(match["path"])
    assert by_level[logging.DEBUG] == ["/ui/", "/ui", "/ui/models", "/favicon.ico"]
    assert by_level[logging.INFO] == ["/ui/missing.js", "/running"]


def test_not_modified_ui_assets_are_quiet_and_errors_are_not() -> None:
    assert is_quiet_ui("/ui/app.js", 304)
    assert not is_quiet_ui("/ui/app.js", 401)
    assert not is_quiet_ui("/uix", 200)
    assert not is_quiet_ui("/api/models", 200)


def test_durations_are_readable() -> None:
    assert format_duration(0.0000123) == "12.3µs"
    assert format_duration(0.0123) == "12.300ms"
    assert format_duration(12.3) == "12.300s"
