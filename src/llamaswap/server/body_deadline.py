"""A request body must arrive in full within `BODY_TIMEOUT_S` of its head.

The head is bounded by the connection handler (`protocol`); without this, a client could
send a head promising a large body and then trickle it a byte at a time, holding a handler
and a connection for as long as it likes. Past the deadline the connection is closed: the
handler's read fails, and whatever it was doing is cancelled like any client that left.
A body that arrived in time is never affected, however long its answer takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

BODY_TIMEOUT_S = 120.0  # generous for large audio uploads on slow links


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    watchdog = asyncio.create_task(_cut_off_a_late_body(request))
    try:
        return await handler(request)
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


async def _cut_off_a_late_body(request: web.Request) -> None:
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            await request.content.wait_eof()
    except TimeoutError:
        log.warning(
            "%s %s: the request body did not arrive within %.0fs: closing the connection",
            request.method,
            request.path,
            BODY_TIMEOUT_S,
        )
        if request.transport is not None:
            request.transport.close()
