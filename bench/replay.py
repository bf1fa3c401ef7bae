"""Replaying a seeded arrival trace through a proxy, open loop (shared by P4 and P8).

A trace is a list of (arrival time, model). Each request is a chat completion that the
upstream answers after `?wait=<service>`; requests are sent at their arrival times whatever
happened to the earlier ones, so the proxy's queueing and swap decisions decide the waits.
Swaps are counted by polling `/running` every 50 ms (works for llama-swap too) and, for
llamaswap, from its "swap to" log lines.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import common

MODELS = ("alpha", "beta", "gamma")


@dataclass(frozen=True)
class Arrival:
    at: float
    model: str


def make_trace(
    n: int, span: float, seed: int = 7, stay: float = 0.6, models: Sequence[str] = MODELS
) -> list[Arrival]:
    """`n` Poisson arrivals at rate n/span; each asks for the previous request's model with
    probability `stay`, else for one of the others (stay = 1/len(models): uniform choice)."""
    rng = random.Random(seed)
    t, model, out = 0.0, rng.choice(models), []
    for _ in range(n):
        t += rng.expovariate(n / span)
        if rng.random() >= stay:
            model = rng.choice([m for m in models if m != model])
        out.append(Arrival(t, model))
    return out


@dataclass(frozen=True)
class Sent:
    """One request as the client saw it: wall-clock send and answer times (s), status."""

    model: str
    sent: float
    done: float
    status: int  # 0: connection error


@dataclass
class TraceResult:
    """What one replay saw: waits of answered requests (latency minus service time)."""

    waits: list[float]
    errors: int
    makespan: float
    polled_swaps: int
    # statuses of the requests that were not answered 200 (0: connection error)
    failures: list[int] = field(default_factory=list)
    requests: list[Sent] = field(default_factory=list)
    # (wall-clock time, "model:state ...") each time /running changed
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return sum(1 for s in self.failures if s == 429)


@dataclass
class Polled:
    """What polling /running saw: starts (models newly seen) and every change of the
    (model, state) set, with its wall-clock time."""

    starts: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)


async def poll_running(url: str, stop: asyncio.Event) -> Polled:
    """Count models newly seen in /running (each is a start, i.e. a swap in)."""
    seen: set[str] = set()
    polled = Polled()
    last = ""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.get(f"{url}/running") as resp:
                    body = json.loads(await resp.read())
                entries = body.get("running", [])
                now = {e["model"] for e in entries}
                polled.starts += len(now - seen)
                seen = now
                states = " ".join(sorted(f"{e['model']}:{e.get('state', '?')}" for e in entries))
                if states != last:
                    polled.timeline.append((time.time(), states or "-"))
                    last = states
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.05)
    return polled


async def replay(url: str, trace: list[Arrival], service_s: float) -> TraceResult:
    waits: list[float] = []
    failures: list[int] = []
    finished: list[float] = []
    sent_log: list[Sent] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_running(url, stop))
    timeout = aiohttp.ClientTimeout(total=300)
    endpoint = f"{url}/v1/chat/completions?wait={round(service_s * 1000)}ms"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        start = time.perf_counter()

        async def one(a: Arrival) -> None:
            await asyncio.sleep(max(0.0, start + a.at - time.perf_counter()))
            sent = time.perf_counter()
            try:
                async with session.post(
                    endpoint, data=common.chat_body(a.model), headers=headers
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            done = time.perf_counter()
            finished.append(done - start)
            # wall clock too, to line requests up with the proxy's timestamped log
            wall = time.time() - time.perf_counter()
            sent_log.append(Sent(a.model, wall + sent, wall + done, status))
            if status == 200:
                waits.append(done - sent - service_s)
            else:
                failures.append(status)

        await asyncio.gather(*(one(a) for a in trace))
    stop.set()
    polled = await poller
    makespan = max(finished) - trace[0].at
    return TraceResult(
        waits, len(failures), makespan, polled.starts, failures, sent_log, polled.timeline
    )


def logged_swaps(log: Path) -> int:
    """llamaswap's swaps (the first load included), from its "swap to" log lines."""
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "swap to" in line)
