"""P3: cold start — the time a proxy adds on top of the upstream's own spawn-to-healthy time.

First the fake upstream is spawned directly N times and /health is polled every 5 ms until it
answers 200 (its own spawn-to-healthy time). Then, through the proxy, a chat request is sent
to the stopped model N times (unloading it in between) and its time to first byte is taken.
Overhead = TTFB through the proxy − the upstream's spawn-to-healthy time (medians, and the
per-iteration distribution against the direct median).

    python bench/p3_cold_swap.py [--quick] [--baseline PATH]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
import common

MODEL = "m1"


def spawn_to_healthy(work: Path, rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        port = common.free_port()
        t0 = time.perf_counter()
        proc = common.start_proc(f"direct-{i}", common.fake_argv(port, MODEL), work)
        try:
            common.wait_http(f"http://{common.HOST}:{port}/health", 30.0, proc, interval=0.005)
            times.append(time.perf_counter() - t0)
        finally:
            proc.stop()
    return times


async def ttfb(url: str) -> float:
    """Seconds from sending the request to the first byte of the answer's body."""
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        async with session.post(url, data=common.chat_body(MODEL), headers=headers) as resp:
            await resp.content.readany()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}")
            await resp.read()
    return elapsed


def wait_unloaded(proxy: common.Proxy, timeout: float = 30.0) -> None:
    common.http_get(f"{proxy.url}/unload", timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = common.http_get(f"{proxy.url}/running")
        if not json.loads(body).get("running"):
            return
        time.sleep(0.02)
    raise TimeoutError("model did not unload")


def main() -> None:
    args = common.base_parser(__doc__ or "").parse_args()
    rounds = 3 if args.quick else 10
    baseline = common.baseline_binary(args.baseline)
    print(f"P3 cold start — {common.machine_note()}; {rounds} rounds")

    notes: list[str] = []
    cold: dict[str, list[float]] = {}
    with common.workspace("p3") as (work, procs):
        direct = spawn_to_healthy(work, rounds)
        spec = common.ModelSpec(MODEL)
        config = common.write_config(work, [spec])
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            cold[label] = []
            for _ in range(rounds):
                wait_unloaded(proxy)
                cold[label].append(asyncio.run(ttfb(f"{proxy.url}/v1/chat/completions")))
            proxy.proc.stop()

    base = statistics.median(direct)
    rows = [
        [
            "upstream spawn → /health 200 (direct)",
            common.ms(base),
            common.ms(min(direct)),
            common.ms(max(direct)),
            "-",
        ]
    ]
    for label, times in cold.items():
        med = statistics.median(times)
        rows.append(
            [
                f"{label}: cold request TTFB",
                common.ms(med),
                common.ms(min(times)),
                common.ms(max(times)),
                common.ms(med - base),
            ]
        )
    common.print_table(
        "Cold start of a stopped model",
        ["what", "median ms", "min ms", "max ms", "overhead (median − direct) ms"],
        rows,
    )
    ours = statistics.median(cold["llamaswap"])
    common.print_summary(
        "P3",
        f"upstream spawn-to-healthy {common.ms(base)} ms, llamaswap cold TTFB "
        f"{common.ms(ours)} ms, overhead {common.ms(ours - base)} ms",
        notes,
        common.compared(cold),
    )


if __name__ == "__main__":
    main()
