"""upstream.ignorePaths: asset requests never start a model, but pass once it is loaded."""

from __future__ import annotations

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.supervisor import ProcessState


async def test_ignored_paths_do_not_start_a_model() -> None:
    async with (
        running_llamaswap(fake_models_yaml(["m"])) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{base}/upstream/m/favicon.ico") as resp:
            assert resp.status == 409
            body = await resp.json()
        assert body["error"]["message"] == (
            "model m is not loaded; path matches upstream.ignorePaths"
        )
        assert state.router.state("m") is ProcessState.STOPPED
        async with session.get(f"{base}/upstream/m/test") as resp:
            assert resp.status == 200  # not ignored: starts the model
        async with session.get(f"{base}/upstream/m/favicon.ico") as resp:
            assert resp.status == 200  # loaded now: passes through
            assert await resp.text() == "GET /favicon.ico"
