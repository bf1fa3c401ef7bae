"""The node replica: one per machine, running llamaswap's own server over that node's models.

The server is the one `llamaswap --config` runs (`serve.Server`: router, scheduler,
supervisor, the whole HTTP API), bound to 127.0.0.1 on a free port inside the replica.
Requests reach it through `forward`, an async generator that yields the response head and
then each body chunk as it arrives, so streams are not buffered on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llamaswap.cluster.nodes import node_tree
from llamaswap.cluster.placement import own_node
from llamaswap.cluster.ranking import Eviction, Residency
from llamaswap.config.load import build_config, load_config_text, parse_config_text
from llamaswap.router import eviction_policy
from llamaswap.serve import ServeOptions, Server, put_interpreter_on_path
from llamaswap.supervisor.process import ProcessState

log = logging.getLogger("llamaswap.cluster")

# Headers that belong to one connection, not to the request or response passed along.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
        "content-length",
    }
)
CHUNK = 64 * 1024
LOADED = frozenset({ProcessState.READY, ProcessState.STARTING, ProcessState.ASLEEP})
# How often a draining node looks for models that went idle, to unload them.
DRAIN_POLL_S = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pass_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_HEADERS]


class NodeReplica:
    """Runs on the machine Ray placed it on; serves the node whose resources that machine has."""

    async def __init__(self, config_text: str, source: str) -> None:  # type: ignore[misc]
        put_interpreter_on_path()
        whole = load_config_text(config_text, source)
        assert whole.cluster is not None
        self.node = own_node(whole.cluster)
        tree = node_tree(parse_config_text(config_text, source), whole, self.node)
        config = build_config(tree, f"{source} (node {self.node})")
        self._evictions = eviction_policy(config)
        self.port = free_port()
        self._server = Server(ServeOptions(None, None, f"127.0.0.1:{self.port}"))
        await self._server.start(config)
        self._base = f"http://127.0.0.1:{self.port}"
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )
        self._drain_task: asyncio.Task[None] | None = None
        log.info("node %s serves %d models on %s", self.node, len(config.models), self._base)

    async def forward(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        model: str | None = None,
        node: str | None = None,
        avoid: tuple[str, ...] = (),
    ) -> AsyncIterator[dict[str, Any] | bytes]:
        """One HTTP request to this node's server: first `{"status", "headers", "node"}`, then
        the body's chunks as they come. (`model`, `node` and `avoid` are read by the request
        router only.)"""
        async with self._session.request(
            method,
            self._base + path,
            headers=pass_headers(headers),
            data=body or None,
            allow_redirects=False,
        ) as response:
            yield {
                "status": response.status,
                "headers": pass_headers(list(response.headers.items())),
                "node": self.node,
            }
            async for chunk in response.content.iter_any():
                yield chunk

    async def set_draining(self, on: bool, node: str | None = None) -> bool:
        """Drain (or stop draining) this node: while draining, the request router sends it
        no new requests, and each model is unloaded once nothing is in flight or queued for
        it. Returns whether the node is now draining. (`node` is read by the router.)"""
        if on and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._unload_when_idle())
            log.info("node %s drains", self.node)
        elif not on and self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
            self._drain_task = None
            log.info("node %s no longer drains", self.node)
        return self._drain_task is not None

    async def _unload_when_idle(self) -> None:
        router = self._server.state.router
        while True:
            idle = [
                model
                for model in router.config.models
                if router.state(model) in LOADED
                and router.lease_count(model) + router.queued(model) == 0
            ]
            if idle:
                try:
                    await router.unload(idle)
                except Exception:  # the next round tries again; draining must not stop
                    log.exception("node %s: unloading %s while draining", self.node, idle)
            await asyncio.sleep(DRAIN_POLL_S)

    def record_routing_stats(self) -> dict[str, Any]:
        return self.residency().to_stats()

    def residency(self) -> Residency:
        router = self._server.state.router
        models = router.config.models
        ready: set[str] = set()
        starting: set[str] = set()
        for model in models:
            state = router.state(model)
            if state is ProcessState.READY:
                ready.add(model)
            elif state in (ProcessState.STARTING, ProcessState.ASLEEP):
                starting.add(model)  # a sleeping model wakes faster than a cold load
        running = frozenset(ready | starting)
        inflight = {m: router.lease_count(m) + router.queued(m) for m in models}
        evictions = {}
        for model in models:
            if model in running:
                continue
            evicted = self._evictions.evictions(model, running)
            evictions[model] = Eviction(len(evicted), sum(inflight[m] for m in evicted))
        return Residency(
            node=self.node,
            models=frozenset(models),
            ready=frozenset(ready),
            starting=frozenset(starting),
            inflight=inflight,
            limits={m: c.concurrency_limit for m, c in models.items()},
            evictions=evictions,
            draining=self._drain_task is not None,
            at=time.time(),
        )

    async def check_health(self) -> None:
        """Ray restarts the replica when its server stopped answering."""
        async with self._session.get(self._base + "/health") as response:
            if response.status != 200:
                raise RuntimeError(f"node {self.node}: /health answered {response.status}")

    async def __del__(self) -> None:
        # Serve calls this on a graceful stop; the upstream processes stop with the server.
        await self.set_draining(False)
        await self._session.close()
        await self._server.stop()
