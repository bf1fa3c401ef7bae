"""/logs and /logs/stream[/<id>]: the proxy log, the upstream log, per-model logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import aiohttp

from inprocess import FAKE, fake_models_yaml, running_llamaswap
from llamaswap.config.load import load_config_text
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.serve import configure_logging
from llamaswap.server.api.observe_routes import INVALID_LOGGER, LogBufferHandler, format_time

DEADLINE = 10.0
log = logging.getLogger("llamaswap.test")

# A model whose upstream prints one access-log line per request, named with a slash.
LOUD = f"""models:
  org/loud:
    cmd: {FAKE.replace(" --silent", "")} --port ${{PORT}} --model loud
    proxy: http://127.0.0.1:${{PORT}}
    aliases: [noisy]
  quiet:
    cmd: {FAKE} --port ${{PORT}} --model quiet
    proxy: http://127.0.0.1:${{PORT}}
"""


@contextlib.contextmanager
def info_logging() -> Iterator[None]:
    logger = logging.getLogger("llamaswap")
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(old)


async def read_until(resp: aiohttp.ClientResponse, needle: bytes, got: bytes = b"") -> bytes:
    async with asyncio.timeout(DEADLINE):
        while needle not in got:
            chunk = await resp.content.readany()
            assert chunk, f"stream ended before {needle!r}; got {got!r}"
            got += chunk
    return got


async def test_proxy_stream_history_then_live() -> None:
    with info_logging():
        async with running_llamaswap(fake_models_yaml(["a"])) as (base, _):
            log.warning("before-stream marker")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/logs/stream/proxy") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    assert resp.headers["X-Content-Type-Options"] == "nosniff"
                    assert resp.headers["X-Accel-Buffering"] == "no"
                    got = await read_until(resp, b"[WARN] before-stream marker\n")
                    body = {"model": "a", "messages": []}
                    async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                        assert r.status == 200
                    await read_until(resp, b"[INFO] swap to a (evicted nothing) done", got)
                async with session.get(f"{base}/logs") as resp:
                    text = await resp.text()
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    assert "[WARN] before-stream marker\n" in text
                    assert "swap to a" in text


async def test_no_history_sends_only_new_lines() -> None:
    async with running_llamaswap(fake_models_yaml(["a"])) as (base, _):
        log.warning("old line")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/logs/stream/proxy?no-history") as resp,
        ):
            assert resp.status == 200
            # The handler subscribed once the headers are in; anything logged now is live.
            log.warning("new line")
            got = await read_until(resp, b"new line\n")
            assert b"old line" not in got


async def test_logs_html_redirects_to_ui() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/logs", headers={"Accept": "text/html"}, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        assert resp.headers["Location"] == "/ui/"


async def test_unknown_logger_is_400() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        for path in ("/logs/stream/nope", "/logs/stream/a/b"):
            async with session.get(base + path, headers={"Accept": "text/plain"}) as resp:
                assert resp.status == 400
                assert INVALID_LOGGER in await resp.text()


async def test_model_stream_by_id_with_slash_and_by_alias() -> None:
    async with running_llamaswap(LOUD) as (base, state), aiohttp.ClientSession() as session:
        async with (
            session.get(f"{base}/logs/stream/org/loud") as by_id,
            session.get(f"{base}/logs/stream/noisy") as by_alias,
            session.get(f"{base}/logs/stream/upstream") as upstream,
            session.get(f"{base}/logs/stream/quiet") as quiet,
        ):
            for resp in (by_id, by_alias, upstream, quiet):
                assert resp.status == 200
            body = {"model": "noisy", "messages": []}
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                assert r.status == 200
            line = b"POST /v1/chat/completions 200\n"
            for resp in (by_id, by_alias, upstream):
                await read_until(resp, line)
        # History of the model's log has it too; the other model's log does not.
        async with session.get(f"{base}/logs/stream/org/loud") as resp:
            await read_until(resp, line)
        assert state.router.logs["quiet"].history() == b""


async def test_streams_end_when_server_shuts_down() -> None:
    async with aiohttp.ClientSession() as session:
        readers: list[asyncio.Task[bytes]] = []
        async with running_llamaswap(fake_models_yaml(["a"])) as (base, _):
            for path in ("/logs/stream", "/logs/stream/proxy", "/logs/stream/a", "/api/events"):
                resp = await session.get(base + path)
                assert resp.status == 200
                readers.append(asyncio.create_task(resp.read()))
            started = time.monotonic()
        # Leaving the context ran the app's shutdown: every stream ended promptly.
        assert time.monotonic() - started < 5.0
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*readers, return_exceptions=True)


def test_time_formats() -> None:
    when = 1_700_000_000.123456
    assert format_time("", when) == ""
    assert format_time("no-such-layout", when) == ""
    assert format_time("rfc3339", when).startswith("2023-11-1")
    assert format_time("kitchen", when)[-2:] in ("AM", "PM")
    assert format_time("stampmilli", when).endswith(".123")
    assert format_time("stamp", when).startswith("Nov 1")


async def test_handler_formats_and_accepts_other_threads() -> None:
    buffer = LogBuffer()
    handler = LogBufferHandler(buffer, asyncio.get_running_loop(), lambda: "rfc3339")
    logger = logging.getLogger("llamaswap.test.handler")
    logger.addHandler(handler)
    try:
        logger.error("from the loop")
        thread = threading.Thread(target=lambda: logger.warning("from a thread"))
        thread.start()
        thread.join()
        deadline = time.monotonic() + DEADLINE
        while b"from a thread" not in buffer.history():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
    finally:
        logger.removeHandler(handler)
    lines = buffer.history().decode().splitlines()
    assert lines[0].startswith("20") and lines[0].endswith(" [ERROR] from the loop")
    assert lines[1].endswith(" [WARN] from a thread")


async def test_quiet_stdout_still_feeds_the_proxy_log() -> None:
    logger = logging.getLogger("llamaswap")
    before_handlers, before_level = list(logger.handlers), logger.level
    try:
        quiet = "logToStdout: none\n"
        configure_logging(load_config_text(quiet))
        async with running_llamaswap(quiet + fake_models_yaml(["a"])) as (base, _):
            logger.warning("still recorded")  # serve.py logs on `llamaswap` itself
            async with aiohttp.ClientSession() as session, session.get(f"{base}/logs") as resp:
                assert "still recorded" not in await resp.text()  # /logs is stdout's view
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/logs/stream/proxy") as resp,
            ):
                await read_until(resp, b"[WARN] still recorded\n")
    finally:
        for handler in logger.handlers:
            if handler not in before_handlers:
                logger.removeHandler(handler)
        logger.setLevel(before_level)
