"""Selectors (spec §2.9): the pure choice, then real requests through a running llamaswap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from helpers import wait_until
from inprocess import chat, fake_models_yaml, running_llamaswap
from llamaswap.config.model import SelectorConfig, SelectorSettings
from llamaswap.server.api.selectors import Reservations, choose
from llamaswap.supervisor import ProcessState

READY, STARTING, STOPPED, STOPPING = (
    ProcessState.READY,
    ProcessState.STARTING,
    ProcessState.STOPPED,
    ProcessState.STOPPING,
)


def selector(strategy: str, *targets: str, spillover: int = 1) -> SelectorConfig:
    return SelectorConfig(
        strategy=strategy,
        targets=list(targets),
        settings=SelectorSettings(spillover=spillover),
    )


# ---- the choice (pure) ---------------------------------------------------------------------


def test_pin_always_takes_the_first_target() -> None:
    assert choose(selector("pin", "a", "b"), {"a": STOPPED, "b": READY}, {}, 0) == "a"


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"a": STOPPED, "b": STOPPED, "c": STOPPED}, "a"),
        ({"a": STOPPED, "b": STARTING, "c": READY}, "c"),  # ready beats starting
        ({"a": STOPPED, "b": STARTING, "c": STARTING}, "b"),
        ({"a": READY, "b": READY, "c": STOPPED}, "a"),
    ],
)
def test_warm_prefers_ready_then_starting_then_the_first(
    states: dict[str, ProcessState], expected: str
) -> None:
    assert choose(selector("warm", "a", "b", "c"), states, {}, 0) == expected


def test_spillover_starts_the_first_cold_target_when_nothing_is_active() -> None:
    assert choose(selector("spillover", "a", "b"), {"a": STOPPED, "b": STOPPED}, {}, 0) == "a"


def test_spillover_stays_on_an_active_target_below_the_limit() -> None:
    sel = selector("spillover", "a", "b", spillover=2)
    assert choose(sel, {"a": READY, "b": STOPPED}, {"a": 1}, 0) == "a"


def test_spillover_spills_to_a_cold_target_at_the_limit() -> None:
    sel = selector("spillover", "a", "b", spillover=2)
    assert choose(sel, {"a": READY, "b": STOPPED}, {"a": 2}, 0) == "b"


def test_spillover_round_robins_between_equally_busy_active_targets() -> None:
    sel = selector("spillover", "a", "b")
    states = {"a": READY, "b": READY}
    assert [choose(sel, states, {}, turn) for turn in range(4)] == ["a", "b", "a", "b"]


def test_spillover_with_no_cold_target_left_takes_the_least_busy() -> None:
    sel = selector("spillover", "a", "b")
    assert choose(sel, {"a": READY, "b": READY}, {"a": 3, "b": 1}, 0) == "b"


def test_spillover_skips_stopping_targets_and_reports_none_usable() -> None:
    sel = selector("spillover", "a", "b")
    assert choose(sel, {"a": STOPPING, "b": STOPPED}, {}, 0) == "b"
    assert choose(sel, {"a": STOPPING, "b": STOPPING}, {}, 0) is None


def test_spillover_peer_target_counts_as_active_only_while_reserved() -> None:
    sel = selector("spillover", "p/r", "a")  # a peer has no local state
    assert choose(sel, {"a": STOPPED}, {}, 0) == "p/r"
    assert choose(sel, {"a": STOPPED}, {"p/r": 1}, 0) == "a"


# ---- through a running llamaswap ------------------------------------------------------------

POOL = "groups:\n  pool:\n    swap: false\n    members: [a, b]\n"


def with_selectors(body: str) -> str:
    return fake_models_yaml(["a", "b"]) + POOL + "selectors:\n" + body


async def post_chat(
    session: aiohttp.ClientSession, base: str, model: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{base}/v1/chat/completions", json={"model": model, "messages": []}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_pin_selector_rewrites_the_model_before_forwarding() -> None:
    config = with_selectors("  fast: {strategy: pin, targets: [b, a]}\n")
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        answer = await chat(session, base, "fast")
        assert answer["model"] == "b"
        assert json.loads(answer["request_body"])["model"] == "b"


async def test_warm_selector_uses_the_loaded_target() -> None:
    config = with_selectors("  any: {strategy: warm, targets: [a, b]}\n")
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as session:
        await chat(session, base, "b")
        assert state.router.state("a") is ProcessState.STOPPED
        assert (await chat(session, base, "any"))["model"] == "b"


async def test_spillover_sends_a_second_concurrent_request_to_the_next_target() -> None:
    config = with_selectors("  pool: {strategy: spillover, targets: [a, b]}\n")
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as session:
        parked = asyncio.Event()
        release = asyncio.Event()

        async def park_first(model: str) -> None:
            if not parked.is_set():
                parked.set()
                await release.wait()

        state.before_forward = park_first
        first = asyncio.create_task(post_chat(session, base, "pool"))
        await asyncio.wait_for(parked.wait(), 10)
        # a holds the pool's one allowed request: the next one starts b.
        status, second = await post_chat(session, base, "pool")
        assert (status, second["model"]) == (200, "b")
        release.set()
        status, body = await asyncio.wait_for(first, 10)
        assert (status, body["model"]) == (200, "a")


async def test_a_reservation_is_held_for_the_block_and_released_after_it() -> None:
    config = with_selectors("  pool: {strategy: spillover, targets: [a, b]}\n")
    async with running_llamaswap(config) as (_, state):
        reservations = Reservations()
        with reservations.reserve(state, "pool") as first:
            assert first == "a" and reservations.counts("pool") == {"a": 1}
            with pytest.raises(RuntimeError), reservations.reserve(state, "pool") as second:
                assert second == "b"
                raise RuntimeError("the request failed")
            assert reservations.counts("pool") == {"a": 1, "b": 0}
        assert reservations.counts("pool") == {"a": 0, "b": 0}


async def test_no_usable_target_is_a_503_naming_the_selector() -> None:
    # Targets that ignore SIGTERM stay `stopping` for their whole unloadTimeout.
    models = fake_models_yaml(["a", "b"], "unloadTimeout: 5").replace(
        "--silent", "--silent --ignore-sig-term"
    )
    config = models + POOL + "selectors:\n  pool: {strategy: spillover, targets: [a, b]}\n"
    async with running_llamaswap(config) as (base, state), aiohttp.ClientSession() as session:
        await chat(session, base, "a")
        await chat(session, base, "b")
        unload = asyncio.create_task(session.post(f"{base}/api/models/unload"))
        await wait_until(
            lambda: {state.router.state(m) for m in "ab"} == {ProcessState.STOPPING},
            message="both targets stopping",
        )
        status, body = await post_chat(session, base, "pool")
        assert status == 503
        assert body["error"]["message"] == 'selector "pool" has no available spillover targets'
        (await unload).release()


async def test_selectors_are_listed_with_strategy_targets_and_status() -> None:
    config = with_selectors(
        "  fast: {strategy: pin, targets: [b, a], name: Fast, description: quick}\n"
        "  pool: {strategy: spillover, targets: [a, b], settings: {spillover: 2}}\n"
        "  hidden: {strategy: pin, targets: [a], unlisted: true}\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        await chat(session, base, "a")
        async with session.get(f"{base}/v1/models") as resp:
            entries = {e["id"]: e for e in (await resp.json())["data"]}
        assert "hidden" not in entries
        fast = entries["fast"]
        assert fast["name"] == "Fast" and fast["description"] == "quick"
        assert fast["meta"]["llamaswap"] == {
            "type": "selector",
            "strategy": "pin",
            "targets": ["b", "a"],
        }
        assert fast["status"] == {"value": "unloaded"}  # pin watches its first target only
        pool = entries["pool"]
        assert pool["meta"]["llamaswap"]["spillover"] == 2
        assert pool["status"] == {"value": "loaded"}


async def test_profile_pin_may_target_a_selector() -> None:
    config = with_selectors("  fast: {strategy: pin, targets: [b]}\n") + (
        "profiles:\n  quick:\n    pins:\n      default: fast\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.put(f"{base}/api/profiles/active", json={"name": "quick"}) as resp:
            assert resp.status == 200
        assert (await chat(session, base, "default"))["model"] == "b"


async def test_selectors_are_not_routed_on_upstream_paths() -> None:
    config = with_selectors("  fast: {strategy: pin, targets: [b]}\n")
    async with (
        running_llamaswap(config) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/upstream/fast/health") as resp,
    ):
        assert resp.status == 404


async def test_activity_rows_name_the_selector_and_the_resolved_model() -> None:
    config = with_selectors("  fast: {strategy: pin, targets: [b]}\n")
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        await chat(session, base, "fast")
        rows: list[dict[str, Any]] = []

        async def recorded() -> bool:
            async with session.get(f"{base}/api/metrics/activity") as resp:
                rows[:] = (await resp.json())["data"]
            return bool(rows)

        await wait_until(recorded, message="activity row recorded")
        assert rows[0]["model"] == "b"
        assert rows[0]["metadata"]["selector"] == "fast"
