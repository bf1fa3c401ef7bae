"""`/comfyui`: passthrough to the fixed model `comfyui_auto`; only `/comfyui/` starts it."""

from __future__ import annotations

import json

import aiohttp
import pytest

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.config.load import load_config_text
from llamaswap.supervisor import ProcessState

COMFY = "comfyui_auto"


def test_comfyui_auto_gets_forced_compat_and_concurrency() -> None:
    config = load_config_text(
        "models:\n"
        "  comfyui_auto: {cmd: 's ${PORT}', compat: {ignoreWebsockets: false}}\n"
        "  big: {cmd: 's ${PORT}', concurrencyLimit: 80}\n"
        "  plain: {cmd: 's ${PORT}'}\n"
    )
    comfy = config.models[COMFY]
    assert comfy.compat.ignore_websockets is True
    assert comfy.concurrency_limit == 50
    assert config.models["plain"].compat.ignore_websockets is False
    assert config.models["plain"].concurrency_limit == 10
    higher = load_config_text("models:\n  comfyui_auto: {cmd: 's ${PORT}', concurrencyLimit: 80}\n")
    assert higher.models[COMFY].concurrency_limit == 80  # at least 50, not exactly 50


async def get(
    session: aiohttp.ClientSession, url: str, method: str = "GET"
) -> tuple[int, str, str | None]:
    async with session.request(method, url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


async def test_redirects_to_the_trailing_slash() -> None:
    config = fake_models_yaml([COMFY])
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as s:
        status, _, location = await get(s, f"{base}/comfyui")
        assert (status, location) == (301, "/comfyui/")
        status, _, location = await get(s, f"{base}/comfyui?a=1&b=2", "POST")
        assert (status, location) == (308, "/comfyui/?a=1&b=2")
        assert state.router.state(COMFY) is ProcessState.STOPPED


async def test_only_the_root_starts_it() -> None:
    config = fake_models_yaml([COMFY, "other"])
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as s:
        for path in ("/comfyui/api/queue", "/comfyui/index.html"):
            status, text, _ = await get(s, base + path)
            assert status == 409
            assert json.loads(text)["error"]["message"] == (
                "model comfyui_auto is not loaded; only /comfyui/ can start it"
            )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{base}/comfyui/ws?clientId=1")
        assert refused.value.status == 409
        assert state.router.state(COMFY) is ProcessState.STOPPED

        assert await get(s, f"{base}/comfyui/") == (200, "GET /", None)
        assert state.router.state(COMFY) is ProcessState.READY
        # Loaded: every path passes, with the /comfyui prefix removed.
        assert await get(s, f"{base}/comfyui/api/queue", "POST") == (200, "POST /api/queue", None)


async def test_websocket_is_ignored_and_swapped_out_from_under() -> None:
    config = fake_models_yaml([COMFY, "other"])
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as s:
        assert (await get(s, f"{base}/comfyui/"))[0] == 200
        ws = await s.ws_connect(f"{base}/comfyui/ws?clientId=abc")
        greeting = json.loads(await ws.receive_str(timeout=10))
        assert (greeting["model"], greeting["query"]) == (COMFY, "clientId=abc")
        assert state.router.lease_count(COMFY) == 0  # forced ignoreWebsockets: no lease
        body = {"model": "other", "messages": []}
        async with s.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
        assert state.router.state(COMFY) is ProcessState.STOPPED
        await ws.receive(timeout=10)
        await wait_until(lambda: ws.closed, message="websocket closed by the swap")
        # The page's stale requests do not load it back.
        assert (await get(s, f"{base}/comfyui/api/queue"))[0] == 409
        assert state.router.state(COMFY) is ProcessState.STOPPED


async def test_not_configured_is_404() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["other"])) as (base, _),
        aiohttp.ClientSession() as s,
    ):
        for path in ("/comfyui/", "/comfyui/api/queue"):
            status, text, _ = await get(s, base + path)
            assert status == 404
            assert json.loads(text)["error"]["message"] == "local model comfyui_auto not found"
