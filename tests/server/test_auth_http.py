"""API keys and CORS through the real HTTP stack."""

from __future__ import annotations

import base64

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap

CONFIG = 'apiKeys: ["sk-one", "sk-two"]\n' + fake_models_yaml(["m"])


async def test_keys_are_required_where_the_spec_says() -> None:
    async with running_llamaswap(CONFIG) as (base, _), aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/models") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
            body = await resp.json()
            assert body["error"]["message"] == "unauthorized: invalid or missing API key"
        async with session.get(f"{base}/health") as resp:
            assert resp.status == 200  # exempt
        basic = base64.b64encode(b"anyone:sk-two").decode()
        for headers in (
            {"Authorization": "Bearer sk-one"},
            {"Authorization": "bearer sk-two"},
            {"x-api-key": "sk-one"},
            {"Authorization": f"Basic {basic}"},
        ):
            async with session.get(f"{base}/v1/models", headers=headers) as resp:
                assert resp.status == 200, headers
        async with session.get(
            f"{base}/v1/models", headers={"Authorization": "Bearer sk-wrong"}
        ) as resp:
            assert resp.status == 401
        chat = {"model": "m", "messages": []}
        async with session.post(f"{base}/v1/chat/completions", json=chat) as resp:
            assert resp.status == 401  # no model is started without a key
        async with session.post(
            f"{base}/v1/chat/completions", json=chat, headers={"x-api-key": "sk-one"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["model"] == "m"


async def test_preflight_and_origin_echo() -> None:
    async with running_llamaswap(CONFIG) as (base, _), aiohttp.ClientSession() as session:
        async with session.options(
            f"{base}/v1/chat/completions",
            headers={"Access-Control-Request-Headers": "Content-Type, X-Bad Header, Authorization"},
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
        async with session.get(
            f"{base}/v1/models",
            headers={"Origin": "http://ui.example", "Authorization": "Bearer sk-one"},
        ) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example"
