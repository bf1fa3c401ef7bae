"""`/api/performance` and `/api/hardware` (spec §5.1), and the lifetimes behind them.

`add_routes(app)` ties the state's `PerformanceMonitor` to the app (sampling from startup
to cleanup) and, when the app has the observation routes' `Metrics`, adds the
host gauges to `/metrics` for the same span. Registering at startup rather than here keeps
the order of `add_routes` calls in `build_app` free.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from llamaswap.errors import BadRequest, RequestError
from llamaswap.observe.hardware import HardwareCache, HardwareError
from llamaswap.observe.performance import parse_rfc3339, performance_json
from llamaswap.observe.performance_metrics import HostCollector
from llamaswap.server.api.observe_routes import METRICS
from llamaswap.server.state import STATE

__all__ = ["HARDWARE", "add_routes"]

HARDWARE = web.AppKey("llamaswap_hardware", HardwareCache)


async def performance(request: web.Request) -> web.Response:
    monitor = request.app[STATE].performance
    if not monitor.enabled:
        return web.json_response({"enabled": False}, status=503)
    after = None
    text = request.query.get("after", "")
    if text:
        try:
            after = parse_rfc3339(text)
        except ValueError:
            raise BadRequest("invalid 'after' timestamp, use RFC3339 format") from None
    return web.json_response(performance_json(monitor.samples(after)))


async def hardware(request: web.Request) -> web.Response:
    try:
        snapshot = await request.app[HARDWARE].get()
    except HardwareError as exc:
        raise RequestError(str(exc), status=503) from exc
    return web.json_response(snapshot)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    monitor = app[STATE].performance
    collector = HostCollector(monitor.latest)
    sink = app.get(METRICS)
    if sink is not None:
        sink.add_collector(collector)
    try:
        async with monitor:
            yield
    finally:
        if sink is not None:
            sink.remove_collector(collector)


def add_routes(app: web.Application) -> None:
    app[HARDWARE] = HardwareCache()
    app.cleanup_ctx.append(_lifetime)
    app.router.add_get("/api/performance", performance)
    app.router.add_get("/api/hardware", hardware)
