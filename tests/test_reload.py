"""Config reload keeps what did not change: models, their processes and in-flight requests.

A real `Server` (the one `llamaswap` runs) is reloaded in-process, so the tests can look at
process ids and leases while real clients stream through it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from helpers import free_port, free_port_block, pid_gone, wait_until
from inprocess import chat
from llamaswap.serve import ServeOptions, Server
from llamaswap.supervisor import ProcessState

FAKE = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"


def config_yaml(
    start_port: int, responds: dict[str, str], swap: bool = False, flags: str = ""
) -> str:
    """Models answering with their `--respond` text; one group (`swap: false` lets all run).
    `flags` are added to the cmd of models whose name starts with `slow`."""
    lines = [f"startPort: {start_port}", "models:"]
    for name, text in responds.items():
        extra = f" {flags}" if flags and name.startswith("slow") else ""
        lines += [
            f"  {name}:",
            f"    cmd: {FAKE} --port ${{PORT}} --model {name} --respond {text}{extra}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
    members = ", ".join(responds)
    lines += ["groups:", "  all:", f"    swap: {str(swap).lower()}", f"    members: [{members}]"]
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str) -> None:
    path.write_text(text)


@asynccontextmanager
async def running_server(path: Path, text: str) -> AsyncIterator[tuple[str, Server]]:
    write_config(path, text)
    port = free_port()
    server = Server(ServeOptions(config_path=path, config_dir=None, listen=f"127.0.0.1:{port}"))
    await server.start(server.load())
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        await server.stop()


def content(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


class Stream:
    """A slow streaming chat held open by the test: `chunks` chunks, `delay_ms` apart."""

    def __init__(self, session: aiohttp.ClientSession, base: str, model: str, chunks: int) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.done = False  # saw `data: [DONE]`: the stream was not cut
        self.first = asyncio.Event()
        self.task = asyncio.create_task(self._run(session, base, model, chunks))

    async def _run(self, session: aiohttp.ClientSession, base: str, model: str, n: int) -> int:
        url = f"{base}/v1/chat/completions?chunks={n}&chunk_delay=50"
        body = {"model": model, "messages": [], "stream": True}
        async with session.post(url, json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    self.chunks.append(json.loads(line[6:]))
                    self.first.set()
                self.done = self.done or line.strip() == b"data: [DONE]"
        return len(self.chunks) if self.done else -1


def pid(server: Server, model: str) -> int:
    value = server.state.router.processes[model].pid
    assert value is not None
    return value


async def reload_while_streaming(
    session: aiohttp.ClientSession, base: str, server: Server, model: str, new_config: str
) -> tuple[int, Stream]:
    """Load `model`, open a ~1.5 s stream on it, then reload with `new_config` meanwhile."""
    await chat(session, base, model)
    old_pid = pid(server, model)
    stream = Stream(session, base, model, chunks=30)
    await asyncio.wait_for(stream.first.wait(), 10)
    assert server.options.config_path is not None
    write_config(server.options.config_path, new_config)
    await server.reload()
    return old_pid, stream


async def test_reload_changing_one_cmd_restarts_only_that_model(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    async with (
        running_server(path, config_yaml(start, {"a": "one", "b": "one"})) as (base, server),
        aiohttp.ClientSession() as session,
    ):
        assert content(await chat(session, base, "a")) == "one"
        assert content(await chat(session, base, "b")) == "one"
        a_pid, b_pid = pid(server, "a"), pid(server, "b")
        b_log = server.state.router.logs["b"]
        stream = Stream(session, base, "a", chunks=40)  # ~2 s, running across the reload
        await asyncio.wait_for(stream.first.wait(), 10)

        write_config(path, config_yaml(start, {"a": "one", "b": "two"}))
        await server.reload()

        assert await asyncio.wait_for(stream.task, 20) >= 40  # not cut: every chunk arrived
        assert pid(server, "a") == a_pid
        assert content(await chat(session, base, "a")) == "one"
        assert content(await chat(session, base, "b")) == "two"
        assert pid(server, "b") != b_pid
        await wait_until(lambda: pid_gone(b_pid), message="old b process gone")
        # Followers of /logs/stream/b keep one stream across the restart.
        assert server.state.router.logs["b"] is b_log


async def test_request_in_flight_on_a_changed_model_finishes_before_it_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    async with (
        running_server(path, config_yaml(start, {"a": "one", "b": "one"})) as (base, server),
        aiohttp.ClientSession() as session,
    ):
        b_pid, stream = await reload_while_streaming(
            session, base, server, "b", config_yaml(start, {"a": "one", "b": "two"})
        )
        # A request for the new b waits for the old one to finish its stream and stop.
        new_b = asyncio.create_task(chat(session, base, "b"))
        assert await asyncio.wait_for(stream.task, 20) >= 30
        assert all(c["model"] == "b" for c in stream.chunks)
        assert content(await asyncio.wait_for(new_b, 20)) == "two"
        assert pid_gone(b_pid)


async def test_removed_model_finishes_its_stream_then_stops(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    async with (
        running_server(path, config_yaml(start, {"a": "one", "b": "one"})) as (base, server),
        aiohttp.ClientSession() as session,
    ):
        b_pid, stream = await reload_while_streaming(
            session, base, server, "b", config_yaml(start, {"a": "one"})
        )
        async with session.post(
            f"{base}/v1/chat/completions", json={"model": "b", "messages": []}
        ) as resp:
            assert resp.status == 404
        assert await asyncio.wait_for(stream.task, 20) >= 30
        await wait_until(lambda: pid_gone(b_pid), message="removed model's process gone")


async def test_unchanged_config_reload_keeps_every_process(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    text = config_yaml(start, {"a": "one", "b": "one"})
    async with running_server(path, text) as (base, server), aiohttp.ClientSession() as session:
        await chat(session, base, "a")
        a_pid = pid(server, "a")
        write_config(path, text.replace("models:", "healthCheckTimeout: 30\nmodels:"))
        await server.reload()
        assert server.state.router.state("a") is ProcessState.READY
        assert server.state.router.state("b") is ProcessState.STOPPED
        assert (await chat(session, base, "a"))["pid"] == a_pid


async def test_reloads_under_mixed_load_lose_no_request(tmp_path: Path) -> None:
    """Stress: 8 clients swap between three models (one at a time) while the config is
    reloaded again and again, each time changing one model's cmd. Every request succeeds
    and is answered by the model it asked for."""
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    names = ["a", "b", "c"]
    version = {n: "v0" for n in names}
    async with (
        running_server(path, config_yaml(start, dict(version), swap=True)) as (base, server),
        aiohttp.ClientSession() as session,
    ):
        failures: list[str] = []
        served = 0
        stop = asyncio.Event()

        async def client(seed: int) -> None:
            nonlocal served
            rng = random.Random(seed)
            while not stop.is_set():
                model = rng.choice(names)
                streaming = rng.random() < 0.5
                url = f"{base}/v1/chat/completions?chunks=5&chunk_delay=10"
                body = {"model": model, "messages": [], "stream": streaming}
                try:
                    async with session.post(url, json=body) as resp:
                        text = await resp.text()
                        if resp.status != 200:
                            failures.append(f"{model}: {resp.status} {text[:200]}")
                        elif f'"model":"{model}"' not in text.replace(" ", ""):
                            failures.append(f"{model}: answered by another model: {text[:200]}")
                        else:
                            served += 1
                except aiohttp.ClientError as exc:
                    failures.append(f"{model}: {exc!r}")

        clients = [asyncio.create_task(client(i)) for i in range(8)]
        for round_ in range(6):
            await wait_until(lambda s=served: served > s + 5, timeout=30, message="progress")
            changed = names[round_ % 3]
            version[changed] = f"v{round_ + 1}"
            write_config(path, config_yaml(start, dict(version), swap=True))
            await server.reload()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 30)
        assert failures == []
        assert served > 30


async def test_activity_history_survives_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    text = config_yaml(start, {"a": "one"})
    async with running_server(path, text) as (base, server), aiohttp.ClientSession() as session:
        await chat(session, base, "a")
        store = server.state.activity
        await wait_until(lambda: store.stats()["total_requests"] == 1, message="row recorded")
        write_config(path, config_yaml(start, {"a": "two"}))
        await server.reload()
        assert server.state.activity is store
        await chat(session, base, "a")
        async with session.get(f"{base}/api/metrics/activity?sort=id&order=asc") as resp:
            rows = (await resp.json())["data"]
        assert [r["id"] for r in rows] == [1, 2]


async def test_reload_during_a_long_load_does_not_stall_other_models(tmp_path: Path) -> None:
    """A model still loading is not waited for: requests to ready models go on at once; the
    loading model's own waiting request is served once it is (re)started."""
    path = tmp_path / "config.yaml"
    start = free_port_block(8)
    slow = "--startup-delay 4"
    text = config_yaml(start, {"a": "one", "slow": "one"}, flags=slow)
    async with running_server(path, text) as (base, server), aiohttp.ClientSession() as session:
        await chat(session, base, "a")
        waiting = asyncio.create_task(chat(session, base, "slow"))
        await wait_until(
            lambda: server.state.router.state("slow") is ProcessState.STARTING,
            message="slow model loading",
        )
        write_config(path, config_yaml(start, {"a": "one", "slow": "two"}, flags=slow))
        began = time.monotonic()
        await server.reload()
        assert (await chat(session, base, "a"))["model"] == "a"
        assert time.monotonic() - began < 2.0  # not held up by the 4 s load
        assert content(await asyncio.wait_for(waiting, 30)) == "two"
