"""Readiness probing of an upstream (spec §3.2): poll fast first, then back off.

The first probe goes out immediately and the gap doubles from 5 ms to a 20 ms cap, so a
server that starts answering is noticed within ~20 ms (llama-swap waits 250 ms, then
polls every 1 s). After `FAST_PHASE` seconds (a big model is loading) the cap rises to
100 ms so a slow load is not flooded with probes. Only HTTP 200 counts; refused
connections and other statuses mean "not yet".
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from llamaswap.errors import StartError

__all__ = ["FAST_GAP", "FIRST_GAP", "MAX_GAP", "health_url", "wait_healthy"]

FIRST_GAP = 0.005
FAST_GAP = 0.02
FAST_PHASE = 5.0
MAX_GAP = 0.1
# A probe that hangs longer than this is abandoned and retried (while time remains).
PROBE_TIMEOUT = 5.0


def health_url(proxy: str, check_endpoint: str) -> str:
    """Join the upstream base URL and the health endpoint path."""
    return proxy.rstrip("/") + "/" + check_endpoint.lstrip("/")


def format_seconds(seconds: float) -> str:
    """Render a timeout the way error messages show it: `15s`, `0.5s`."""
    return f"{seconds:g}s"


async def _probe(session: aiohttp.ClientSession, url: str, limit: float) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
            await resp.read()
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def wait_healthy(url: str, within: float) -> None:
    """Return once `GET url` answers 200; raise `StartError` after `within` seconds."""
    began = time.monotonic()
    deadline = began + within
    gap = FIRST_GAP
    # One connection per probe: an upstream that closes keep-alive sockets (or is replaced
    # by another on the same port) must not see stale pooled connections.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if await _probe(session, url, min(PROBE_TIMEOUT, remaining)):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(gap, remaining))
            cap = FAST_GAP if time.monotonic() - began < FAST_PHASE else MAX_GAP
            gap = min(gap * 2, cap)
    raise StartError(f"health check timed out after {format_seconds(within)}")
