"""Run llamaswap inside the test's event loop (real sockets, real upstream processes).

Used where a test needs a seam into the server (the `before_forward` hook) or to look at the
router's state directly; everything else talks to a llamaswap subprocess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from helpers import free_port, free_port_block
from llamaswap.config.load import load_config_text
from llamaswap.observe.events import EventBus
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.router import Router
from llamaswap.server.access_log import ACCESS_LOG
from llamaswap.server.app import build_app
from llamaswap.server.auth import ApiKeyChecker
from llamaswap.server.protocol import Runner
from llamaswap.server.proxy.fast.site import FastSite
from llamaswap.server.state import AppState

FAKE = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"


def fake_models_yaml(names: list[str], extra: str = "") -> str:
    """A `models:` block of fake upstreams on ${PORT}, plus `extra` model keys for each."""
    lines = ["models:"]
    for name in names:
        lines += [
            f"  {name}:",
            f"    cmd: {FAKE} --port ${{PORT}} --model {name}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
        lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def running_llamaswap(
    config_yaml: str, fast_path: bool | None = None
) -> AsyncIterator[tuple[str, AppState]]:
    """Yield (base URL, app state) of a llamaswap serving `config_yaml` on a free port.

    `fast_path` puts the fast path in front (None: as `LLAMASWAP_FAST_PATH` says)."""
    if fast_path is None:
        # The server's default: on, unless the variable turns it off.
        fast_path = os.environ.get("LLAMASWAP_FAST_PATH", "1").lower() not in ("0", "false", "no")
    start_port = free_port_block(16)
    config = load_config_text(f"startPort: {start_port}\n" + config_yaml)
    router = Router(config, events=EventBus(), upstream_log=LogBuffer())
    state = AppState(config, router, ApiKeyChecker(config.api_keys))
    runner = Runner(build_app(state), handler_cancellation=True, **ACCESS_LOG)
    await runner.setup()
    port = free_port()
    site = (
        FastSite(runner, "127.0.0.1", port, state, drain_timeout=5.0)
        if fast_path
        else web.TCPSite(runner, "127.0.0.1", port)
    )
    async with router:
        await site.start()
        try:
            yield f"http://127.0.0.1:{port}", state
        finally:
            await runner.cleanup()


async def chat(session: aiohttp.ClientSession, base: str, model: str) -> dict[str, Any]:
    """One non-streaming chat completion that must succeed; its JSON answer."""
    async with session.post(
        f"{base}/v1/chat/completions", json={"model": model, "messages": []}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body
