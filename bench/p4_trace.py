"""P4: a seeded arrival trace over three mutually exclusive models that each take 2 s to load.

The trace (seed 7): 60 requests over ~30 s, Poisson arrivals; each request asks for the
previous request's model with probability 0.6, else for one of the other two. Each request
is a chat completion that the upstream answers after `?wait=200ms`. Requests are sent at their
arrival times (open loop), so the proxy's queueing and swap decisions decide the waits.

Reported: swaps (from llamaswap's "swap to" log lines, and from polling /running every 50 ms,
which also works for llama-swap), makespan (first arrival → last answer), and the wait of a
request (its latency minus the 200 ms service time), p50 / p99 / max. "Model changes in
arrival order" is what a strictly first-come-first-served proxy would swap.

    python bench/p4_trace.py [--quick] [--baseline PATH]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import common

MODELS = ("alpha", "beta", "gamma")
SERVICE_S = 0.2


@dataclass(frozen=True)
class Arrival:
    at: float
    model: str


def make_trace(n: int, span: float, seed: int = 7) -> list[Arrival]:
    rng = random.Random(seed)
    t, model, out = 0.0, rng.choice(MODELS), []
    for _ in range(n):
        t += rng.expovariate(n / span)
        if rng.random() >= 0.6:
            model = rng.choice([m for m in MODELS if m != model])
        out.append(Arrival(t, model))
    return out


@dataclass
class TraceResult:
    waits: list[float]
    errors: int
    makespan: float
    polled_swaps: int


async def poll_running(url: str, stop: asyncio.Event) -> int:
    """Count models newly seen in /running (each is a start, i.e. a swap in)."""
    seen: set[str] = set()
    starts = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.get(f"{url}/running") as resp:
                    body = json.loads(await resp.read())
                now = {e["model"] for e in body.get("running", [])}
                starts += len(now - seen)
                seen = now
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.05)
    return starts


async def replay(url: str, trace: list[Arrival]) -> TraceResult:
    waits: list[float] = []
    errors = 0
    finished: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_running(url, stop))
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        start = time.perf_counter()

        async def one(a: Arrival) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, start + a.at - time.perf_counter()))
            sent = time.perf_counter()
            headers = {"Content-Type": "application/json"}
            endpoint = f"{url}/v1/chat/completions?wait={int(SERVICE_S * 1000)}ms"
            try:
                async with session.post(
                    endpoint, data=common.chat_body(a.model), headers=headers
                ) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            done = time.perf_counter()
            finished.append(done - start)
            if ok:
                waits.append(done - sent - SERVICE_S)
            else:
                errors += 1

        await asyncio.gather(*(one(a) for a in trace))
    stop.set()
    polled = await poller
    return TraceResult(waits, errors, max(finished) - trace[0].at, polled)


def main() -> None:
    args = common.base_parser(__doc__ or "").parse_args()
    n, span, load_s = (12, 6.0, 0.5) if args.quick else (60, 30.0, 2.0)
    trace = make_trace(n, span)
    changes = sum(1 for a, b in itertools.pairwise(trace) if a.model != b.model) + 1
    baseline = common.baseline_binary(args.baseline)
    print(
        f"P4 trace — {common.machine_note()}; {n} requests over {trace[-1].at:.1f}s, "
        f"3 exclusive models, {load_s:g}s load time, {SERVICE_S * 1000:.0f} ms service"
    )

    notes: list[str] = []
    results: dict[str, tuple[TraceResult, int | None]] = {}
    with common.workspace("p4") as (work, procs):
        specs = [common.ModelSpec(m, startup_delay=load_s) for m in MODELS]
        groups = {"chat": {"swap": True, "exclusive": True, "members": list(MODELS)}}
        config = common.write_config(work, specs, groups)
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            result = asyncio.run(replay(proxy.url, trace))
            proxy.proc.stop()
            logged = _logged_swaps(proxy.proc.log_path) if label == "llamaswap" else None
            results[label] = (result, logged)

    rows = []
    for label, (r, logged) in results.items():
        rows.append(
            [
                label,
                "-" if logged is None else logged,
                r.polled_swaps,
                changes,
                f"{r.makespan:.1f}",
                common.ms(common.percentile(r.waits, 50)),
                common.ms(common.percentile(r.waits, 99)),
                common.ms(max(r.waits, default=float("nan"))),
                r.errors,
            ]
        )
    common.print_table(
        "Seeded trace over three exclusive models",
        [
            "proxy",
            "swaps (log)",
            "swaps (/running)",
            "model changes in arrival order",
            "makespan s",
            "wait p50 ms",
            "wait p99 ms",
            "wait max ms",
            "errors",
        ],
        rows,
    )
    ours, logged = results["llamaswap"]
    common.print_summary(
        "P4",
        f"llamaswap {logged} swaps for {changes} model changes, makespan "
        f"{ours.makespan:.1f}s, wait p50 {common.ms(common.percentile(ours.waits, 50))} ms, "
        f"p99 {common.ms(common.percentile(ours.waits, 99))} ms, errors {ours.errors}",
        notes,
        "llama-swap" in results,
    )


def _logged_swaps(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "swap to" in line)


if __name__ == "__main__":
    main()
