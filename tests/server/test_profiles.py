"""Profiles: the profile API, pin routing, /v1/models entries and `profileChanged` (§2.9)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.supervisor import ProcessState

DEADLINE = 10.0

CONFIG = fake_models_yaml(["alpha", "beta"]) + (
    "profiles:\n"
    "  fast:\n"
    "    description: small and quick\n"
    "    pins:\n"
    "      chat: alpha\n"
    "      beta: alpha\n"
    "      off: ''\n"
    "  big:\n"
    "    pins:\n"
    "      chat: beta\n"
)


async def put_active(
    session: aiohttp.ClientSession, base: str, data: Any, *, raw: bytes | None = None
) -> tuple[int, Any]:
    body = raw if raw is not None else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"}
    async with session.put(f"{base}/api/profiles/active", data=body, headers=headers) as r:
        return r.status, await r.json()


async def chat(session: aiohttp.ClientSession, base: str, model: str) -> tuple[int, Any]:
    body = {"model": model, "messages": []}
    async with session.post(f"{base}/v1/chat/completions", json=body) as r:
        return r.status, await r.json()


async def test_list_and_switch() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/profiles") as r:
            assert r.status == 200
            assert await r.json() == {
                "active": None,
                "profiles": [
                    {"name": "big", "description": "", "pins": {"chat": "beta"}},
                    {
                        "name": "fast",
                        "description": "small and quick",
                        "pins": {"chat": "alpha", "beta": "alpha", "off": ""},
                    },
                ],
            }
        assert await put_active(s, base, {"name": "fast"}) == (200, {"active": "fast"})
        assert state.active_profile == "fast"
        async with s.get(f"{base}/api/profiles") as r:
            assert (await r.json())["active"] == "fast"
        assert await put_active(s, base, {"name": "big"}) == (200, {"active": "big"})
        assert await put_active(s, base, {"name": None}) == (200, {"active": None})
        assert state.active_profile is None


async def test_api_errors() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        cases: list[tuple[Any, bytes | None, int, str]] = [
            (None, b"{not json", 400, "invalid profile request"),
            (None, b"", 400, "invalid profile request"),
            (["fast"], None, 400, "invalid profile request"),
            ({}, None, 400, "profile name is required"),
            ({"other": "fast"}, None, 400, "profile name is required"),
            ({"name": 3}, None, 400, "profile name must be a string or null"),
            ({"name": ["fast"]}, None, 400, "profile name must be a string or null"),
            ({"name": "nope"}, None, 404, 'profile "nope" not found'),
        ]
        for data, raw, status, message in cases:
            got_status, body = await put_active(s, base, data, raw=raw)
            assert got_status == status, (data, raw, body)
            assert body["error"]["message"] == message
        assert state.active_profile is None


async def test_pins_route_to_their_target_and_switching_back_restores() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        # No profile: `chat` is unknown, `beta` is beta.
        status, body = await chat(s, base, "chat")
        assert status == 404
        assert body["error"]["message"] == "no local server found for requested model"

        await put_active(s, base, {"name": "fast"})
        status, body = await chat(s, base, "chat")
        assert (status, body["model"]) == (200, "alpha")  # the upstream saw the target
        assert state.router.state("alpha") is ProcessState.READY
        assert state.router.state("beta") is ProcessState.STOPPED
        # A pin shadows a real ID.
        status, body = await chat(s, base, "beta")
        assert (status, body["model"]) == (200, "alpha")
        assert state.router.state("beta") is ProcessState.STOPPED
        # A disabled pin refuses the name.
        status, body = await chat(s, base, "off")
        assert status == 404
        assert body["error"]["message"] == "no model id could be identified"
        # /upstream/<pin>/ goes through the pin too.
        async with s.get(f"{base}/upstream/beta/v1/models") as r:
            assert r.status == 200
        assert state.router.state("beta") is ProcessState.STOPPED
        async with s.get(f"{base}/upstream/off/health") as r:
            assert r.status == 404

        # Another profile re-targets the same pin.
        await put_active(s, base, {"name": "big"})
        status, body = await chat(s, base, "chat")
        assert (status, body["model"]) == (200, "beta")
        assert state.router.state("beta") is ProcessState.READY

        # Back to none: normal routing.
        await put_active(s, base, {"name": None})
        status, body = await chat(s, base, "chat")
        assert status == 404
        status, body = await chat(s, base, "off")
        assert status == 404
        assert body["error"]["message"] == "no local server found for requested model"


async def test_query_pin_is_rewritten() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        await put_active(s, base, {"name": "fast"})
        async with s.get(f"{base}/v1/audio/voices", params={"model": "chat"}) as r:
            assert r.status == 200
            assert (await r.json())["model"] == "alpha"
        assert state.router.state("alpha") is ProcessState.READY


async def test_models_list_shows_active_pins_that_shadow_nothing() -> None:
    async with running_llamaswap(CONFIG) as (base, _), aiohttp.ClientSession() as s:

        async def listed() -> dict[str, Any]:
            async with s.get(f"{base}/v1/models") as r:
                return {e["id"]: e for e in (await r.json())["data"]}

        assert set(await listed()) == {"alpha", "beta"}
        await put_active(s, base, {"name": "fast"})
        entries = await listed()
        assert list(entries) == ["alpha", "beta", "chat", "off"]  # sorted; `beta` not doubled
        assert entries["beta"]["meta"]["llamaswap"]["type"] == "model"
        assert entries["chat"]["meta"]["llamaswap"]["type"] == "profile"
        assert entries["chat"]["meta"]["llamaswap"]["target"] == "alpha"
        assert entries["chat"]["status"] == {"value": "unloaded"}


async def test_profile_changed_on_api_events() -> None:
    async with (
        running_llamaswap(CONFIG) as (base, _),
        aiohttp.ClientSession() as s,
        s.get(f"{base}/api/events") as events,
    ):

        async def until_profile_changed() -> Any:
            async with asyncio.timeout(DEADLINE):
                while True:
                    frame = await events.content.readuntil(b"\n\n")
                    outer = json.loads(frame.decode().split("data:", 1)[1])
                    if outer["type"] == "profileChanged":
                        return json.loads(outer["data"])

        assert await until_profile_changed() == {"active": None}  # the initial frame
        await put_active(s, base, {"name": "fast"})
        assert await until_profile_changed() == {"active": "fast"}
        # [H]: a fresh modelStatus follows, since pins change what names mean.
        frame = await asyncio.wait_for(events.content.readuntil(b"\n\n"), DEADLINE)
        assert json.loads(frame.decode().split("data:", 1)[1])["type"] == "modelStatus"
        await put_active(s, base, {"name": None})
        assert await until_profile_changed() == {"active": None}


async def test_multipart_pin_is_rewritten() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        await put_active(s, base, {"name": "fast"})
        form = aiohttp.FormData()
        form.add_field("model", "chat")
        form.add_field("file", b"12345", filename="a.wav", content_type="audio/wav")
        async with s.post(f"{base}/v1/audio/transcriptions", data=form) as r:
            body = await r.json()
            assert r.status == 200, body
        assert body["model"] == "alpha"
        assert state.router.state("alpha") is ProcessState.READY
        assert state.router.state("beta") is ProcessState.STOPPED


async def test_urlencoded_pin_is_rewritten() -> None:
    async with running_llamaswap(CONFIG) as (base, state), aiohttp.ClientSession() as s:
        await put_active(s, base, {"name": "big"})
        data = {"model": "chat", "prompt": "x"}
        async with s.post(f"{base}/v1/images/generations", data=data) as r:
            assert r.status == 200, await r.text()
        assert state.router.state("beta") is ProcessState.READY
        assert state.router.state("alpha") is ProcessState.STOPPED
