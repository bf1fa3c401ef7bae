"""The listening socket with the fast path in front of the application (plain HTTP only)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from llamaswap.server.proxy.fast.protocol import Front, metrics_of
from llamaswap.server.state import AppState

__all__ = ["FastSite"]

log = logging.getLogger("llamaswap.server")


class FastSite(web.TCPSite):
    """`web.TCPSite` whose connections start with `FrontProtocol`; the runner's own server
    (aiohttp's handler factory) takes over whatever the fast path does not serve."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int,
        state: AppState,
        drain_timeout: float,
    ) -> None:
        super().__init__(runner, host, port)
        server = runner.server
        assert server is not None
        self._front = Front(server, state, metrics_of(runner.app))
        self._drain_timeout = drain_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front, self._host, self._port, backlog=self._backlog
        )
        log.info("fast path on: plain model requests are served without aiohttp")

    async def stop(self) -> None:
        await super().stop()  # no new connections
        await self._front.shutdown(self._drain_timeout)
