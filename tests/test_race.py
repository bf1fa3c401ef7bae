"""The swap race of llama-swap, reproduced deterministically: it must not happen here.

llama-swap (before c3f0d43e) let a request for a loaded model pass the "model is ready"
check, then let a swap stop that model before the request reached it. Here the grant is the
lease, so a request parked between grant and forwarding keeps its model alive.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from helpers import wait_until
from inprocess import chat, fake_models_yaml, running_llamaswap
from llamaswap.supervisor import ProcessState

# Both scheduler policies keep the promise; each test runs under each.
pytestmark = pytest.mark.parametrize("policy", ["batch", "fifo"])


def with_policy(config: str, policy: str) -> str:
    return config + f"routing:\n  scheduler:\n    policy: {policy}\n"


async def test_parked_request_survives_a_swap(policy: str) -> None:
    config = fake_models_yaml(["m1", "m2"])  # one default group: swap + exclusive
    async with (
        running_llamaswap(with_policy(config, policy)) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        await chat(session, base, "m1")  # load m1
        parked = asyncio.Event()
        release = asyncio.Event()

        async def park_first_m1(model: str) -> None:
            if model == "m1" and not parked.is_set():
                parked.set()
                await release.wait()

        state.before_forward = park_first_m1
        queue_events = state.router.events.subscribe(kinds=("queue",))
        first = asyncio.create_task(chat(session, base, "m1"))
        await asyncio.wait_for(parked.wait(), 5)
        swap = asyncio.create_task(chat(session, base, "m2"))

        # The swap is decided but must wait for the parked request's lease.
        await wait_until(lambda: state.router.queue_depth() == 1, message="swap queued")
        assert state.router.state("m1") is ProcessState.READY
        assert state.router.state("m2") is ProcessState.STOPPED
        assert state.router.lease_count("m1") == 1
        assert not swap.done()

        release.set()
        first_body = await asyncio.wait_for(first, 10)
        assert first_body["model"] == "m1"
        second_body = await asyncio.wait_for(swap, 20)
        assert second_body["model"] == "m2"
        assert state.router.state("m1") is ProcessState.STOPPED
        assert state.router.state("m2") is ProcessState.READY
        depths = []
        while (event := queue_events.get_nowait()) is not None:
            depths.append(event.data["depth"])
        queue_events.close()
        assert depths == [1, 0]  # published for the UI's queue chart


async def test_requests_to_other_models_are_not_blocked_by_a_draining_swap(policy: str) -> None:
    config = (
        fake_models_yaml(["a", "b", "other"])
        + "groups:\n"
        + "  pair: {swap: true, exclusive: false, members: [a, b]}\n"
        + "  side: {swap: true, exclusive: false, members: [other]}\n"
    )
    async with (
        running_llamaswap(with_policy(config, policy)) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        await asyncio.gather(chat(session, base, "a"), chat(session, base, "other"))
        parked = asyncio.Event()
        release = asyncio.Event()

        async def park_a(model: str) -> None:
            if model == "a" and not parked.is_set():
                parked.set()
                await release.wait()

        state.before_forward = park_a
        held = asyncio.create_task(chat(session, base, "a"))
        await asyncio.wait_for(parked.wait(), 5)
        swap = asyncio.create_task(chat(session, base, "b"))
        await wait_until(lambda: state.router.queue_depth() == 1, message="swap queued")
        # The swap a→b drains, yet "other" is served at once.
        body = await asyncio.wait_for(chat(session, base, "other"), 5)
        assert body["model"] == "other"
        assert not swap.done()
        release.set()
        assert (await asyncio.wait_for(held, 10))["model"] == "a"
        assert (await asyncio.wait_for(swap, 20))["model"] == "b"


async def test_client_leaving_while_queued_frees_its_place(policy: str) -> None:
    config = fake_models_yaml(["m1", "m2"])
    async with (
        running_llamaswap(with_policy(config, policy)) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        await chat(session, base, "m1")
        parked = asyncio.Event()
        release = asyncio.Event()

        async def park(model: str) -> None:
            if model == "m1" and not parked.is_set():
                parked.set()
                await release.wait()

        state.before_forward = park
        held = asyncio.create_task(chat(session, base, "m1"))
        await asyncio.wait_for(parked.wait(), 5)
        async with aiohttp.ClientSession() as leaving:
            queued = asyncio.create_task(chat(leaving, base, "m2"))
            await wait_until(lambda: state.router.queue_depth() == 1, message="queued")
            queued.cancel()  # the client gives up and its connection closes
            await asyncio.gather(queued, return_exceptions=True)
        await wait_until(lambda: state.router.queue_depth() == 0, message="place freed")
        release.set()
        assert (await asyncio.wait_for(held, 10))["model"] == "m1"
        # Nobody wants m2 any more: no swap happened, m1 keeps running.
        assert state.router.state("m1") is ProcessState.READY
        assert state.router.state("m2") is ProcessState.STOPPED
