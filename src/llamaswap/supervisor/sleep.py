"""Putting a running upstream to sleep and waking it, through its own HTTP endpoints.

A sleep tier (vLLM's sleep mode: `POST /sleep?level=1`, `POST /wake_up`, `GET /is_sleeping`)
frees the device memory while the process and its weights stay in host RAM, so waking takes
a fraction of a cold start. The endpoints come from the model's `sleep` config. When a
`status` endpoint is given, the answer (`{"is_sleeping": bool}`) must confirm the change.
"""

from __future__ import annotations

import json
import logging

import aiohttp

from llamaswap.config.model import ModelConfig
from llamaswap.config.resources import Endpoint, SleepConfig
from llamaswap.errors import UpstreamError
from llamaswap.supervisor.process import ProcessState, UpstreamProcess

__all__ = ["release_device", "set_asleep", "wake"]

log = logging.getLogger("llamaswap.supervisor")


async def _call(session: aiohttp.ClientSession, proxy: str, endpoint: Endpoint) -> bytes:
    url = proxy.rstrip("/") + endpoint.path
    try:
        async with session.request(endpoint.method, url) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise UpstreamError(f"{endpoint} answered {resp.status}")
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"{endpoint} failed: {exc or type(exc).__name__}") from exc


async def set_asleep(proxy: str, config: SleepConfig, asleep: bool, seconds: float) -> None:
    """Call the sleep (or wake) endpoint on `proxy`, then check the status endpoint if any.
    Raises UpstreamError when the upstream refuses, fails, reports the other state or takes
    longer than `seconds`."""
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        await _call(session, proxy, config.sleep if asleep else config.wake)
        if config.status is None:
            return
        body = await _call(session, proxy, config.status)
    try:
        state = json.loads(body).get("is_sleeping")
    except (ValueError, AttributeError) as exc:
        raise UpstreamError(f"{config.status} answered no is_sleeping: {body[:100]!r}") from exc
    if state is not asleep:
        word = "asleep" if asleep else "awake"
        raise UpstreamError(f"{config.status} says is_sleeping={state} after asking it {word}")


async def release_device(
    process: UpstreamProcess, model: ModelConfig, sleep: bool, seconds: float
) -> bool:
    """Make `model` give its device memory back: put it to sleep when asked and it can (stop
    it if that fails), else stop it (`seconds` of grace). True when it is asleep."""
    if sleep and model.sleep is not None and process.state is ProcessState.READY:
        try:
            await set_asleep(model.proxy, model.sleep, True, seconds)
            return True
        except UpstreamError as exc:
            log.warning("could not put %s to sleep (%s): stopping it", model.id, exc)
    await process.stop(seconds)
    return False


async def wake(process: UpstreamProcess, model: ModelConfig, seconds: float) -> None:
    """Wake the sleeping `model`. One that does not wake is stopped: UpstreamError."""
    try:
        if model.sleep is None or process.state is not ProcessState.READY:
            raise UpstreamError(f"{model.id} is not running any more")
        await set_asleep(model.proxy, model.sleep, False, seconds)
    except UpstreamError as exc:
        await process.stop(float(model.unload_timeout))
        raise UpstreamError(f"failed to wake {model.id}: {exc}") from exc
