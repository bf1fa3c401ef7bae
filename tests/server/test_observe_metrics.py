"""Prometheus /metrics: swaps, evictions, queue wait/depth, leases, states, requests."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.observe import metrics

DEADLINE = 10.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == metrics.CONTENT_TYPE
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def chat(session: aiohttp.ClientSession, base: str, model: str) -> int:
    body = {"model": model, "messages": []}
    async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def test_swaps_evictions_and_queue_after_two_swaps() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a", "b"])) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        assert await chat(session, base, "a") == 200
        assert await chat(session, base, "b") == 200  # evicts a
        s = await scrape(session, base)
        assert value(s, "llamaswap_swaps_total", target="a", outcome="ok") == 1
        assert value(s, "llamaswap_swaps_total", target="b", outcome="ok") == 1
        assert value(s, "llamaswap_swap_duration_seconds_count") == 2
        assert value(s, "llamaswap_evictions_total", model="a", reason="evict") == 1
        assert value(s, "llamaswap_queue_wait_seconds_count") == 2
        assert value(s, "llamaswap_queue_wait_seconds_sum") > 0
        assert value(s, "llamaswap_queue_depth") == 0
        assert value(s, "llamaswap_leases", model="a") == 0
        assert value(s, "llamaswap_process_state", model="b", state="ready") == 1
        assert value(s, "llamaswap_process_state", model="a", state="stopped") == 1
        assert value(s, "llamaswap_process_state", model="a", state="ready") == 0
        route = "/v1/chat/completions"
        assert value(s, "llamaswap_requests_total", model="b", route=route, status="200") == 1
        assert value(s, "llamaswap_request_duration_seconds_count", model="a", route=route) == 1
        assert value(s, "llamaswap_time_to_first_byte_seconds_count", model="b") == 1

        async with session.post(f"{base}/api/models/unload") as resp:
            assert resp.status == 200
        s = await scrape(session, base)
        assert value(s, "llamaswap_evictions_total", model="b", reason="unload") == 1
        # The first scrape is itself counted, under no model.
        assert value(s, "llamaswap_requests_total", model="", route="/metrics", status="200") >= 1


async def test_leases_and_queue_depth_while_a_request_is_held() -> None:
    async with running_llamaswap(fake_models_yaml(["a", "b"])) as (base, state):
        held = asyncio.Event()
        go = asyncio.Event()

        async def hold(model_id: str) -> None:
            if model_id == "a":
                held.set()
                await go.wait()

        state.before_forward = hold
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(chat(session, base, "a"))
            async with asyncio.timeout(DEADLINE):
                await held.wait()
            second = asyncio.create_task(chat(session, base, "b"))  # must wait for a's lease
            await wait_until(lambda: state.router.queue_depth() == 1, timeout=DEADLINE)
            s = await scrape(session, base)
            assert value(s, "llamaswap_leases", model="a") == 1
            assert value(s, "llamaswap_queue_depth") == 1
            assert value(s, "llamaswap_model_queued", model="b") == 1
            assert value(s, "llamaswap_model_load_seconds", model="a") > 0
            assert ("llamaswap_model_load_seconds", frozenset({("model", "b")})) not in s
            go.set()
            assert await first == 200
            assert await second == 200
            s = await scrape(session, base)
            assert value(s, "llamaswap_queue_depth") == 0
            assert value(s, "llamaswap_leases", model="a") == 0
            assert value(s, "llamaswap_queue_wait_seconds_count") == 2
            assert value(s, "llamaswap_model_queued", model="b") == 0
            assert value(s, "llamaswap_model_load_seconds", model="b") > 0


async def test_start_failure_is_counted() -> None:
    config = fake_models_yaml(["ok"]) + (
        "  broken:\n"
        "    cmd: python3 -c 'import sys; sys.exit(3)' ${PORT}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        assert await chat(session, base, "broken") >= 500
        s = await scrape(session, base)
        assert value(s, "llamaswap_swaps_total", target="broken", outcome="error") == 1
        assert value(s, "llamaswap_start_failures_total", model="broken") == 1
        route = "/v1/chat/completions"
        statuses = [
            labels
            for (name, labels) in s
            if name == "llamaswap_requests_total" and ("route", route) in labels
        ]
        assert len(statuses) == 1 and ("model", "") in statuses[0]


async def test_each_app_has_its_own_registry() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["a"])) as (base1, _),
        running_llamaswap(fake_models_yaml(["a"])) as (base2, _),
        aiohttp.ClientSession() as session,
    ):
        assert await chat(session, base1, "a") == 200
        s1, s2 = await scrape(session, base1), await scrape(session, base2)
        assert value(s1, "llamaswap_swaps_total", target="a", outcome="ok") == 1
        assert value(s2, "llamaswap_swaps_total", target="a", outcome="ok") == 0
