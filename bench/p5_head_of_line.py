"""P5: head-of-line blocking — latency of a loaded model while another model swaps in.

Model `resident` sits in a persistent, non-exclusive group; `s1` and `s2` share a swap group
(each takes 1 s to load). A paced open-loop load (200 req/s, evenly spaced) goes to
`resident`, once with nothing else happening and once while a background client keeps asking
s1, s2, s1, ... so that a swap is in flight the whole time. The same is done against
`resident`'s upstream directly (the swaps still run through the proxy), which separates what
the proxy adds from what the machine's two cores lose to the swapping processes.

    python bench/p5_head_of_line.py [--quick] [--baseline PATH]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import common

RESIDENT = "resident"
SWAPPERS = ("s1", "s2")
RATE = 200.0
JSON = {"Content-Type": "application/json"}


@dataclass
class Paced:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    swaps: int = 0


async def paced_load(url: str, rate: float, duration: float) -> Paced:
    out = Paced()
    body = common.chat_body(RESIDENT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/chat/completions", data=body, headers=JSON) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                out.latencies.append(time.perf_counter() - t0)
            else:
                out.errors += 1

        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return out


async def churn(proxy_url: str, stop: asyncio.Event) -> int:
    """Ask s1, s2, s1, ... back to back; each answer needs a swap. Returns swaps done."""
    done = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            model = SWAPPERS[done % 2]
            async with session.post(
                f"{proxy_url}/v1/chat/completions", data=common.chat_body(model), headers=JSON
            ) as r:
                await r.read()
            done += 1
    return done


async def scenario(target: str, proxy_url: str, swapping: bool, duration: float) -> Paced:
    stop = asyncio.Event()
    churner = asyncio.create_task(churn(proxy_url, stop)) if swapping else None
    if churner is not None:
        await asyncio.sleep(0.05)  # the first swap is under way
    result = await paced_load(target, RATE, duration)
    stop.set()
    if churner is not None:
        result.swaps = await churner
    return result


def main() -> None:
    args = common.base_parser(__doc__ or "").parse_args()
    duration, load_s = (2.0, 0.3) if args.quick else (10.0, 1.0)
    baseline = common.baseline_binary(args.baseline)
    print(
        f"P5 head-of-line — {common.machine_note()}; {RATE:.0f} req/s to `{RESIDENT}` for "
        f"{duration:g}s per cell; swappers load in {load_s:g}s"
    )
    notes: list[str] = []
    rows = []
    p99: dict[tuple[str, bool], float] = {}
    with common.workspace("p5") as (work, procs):
        resident = common.ModelSpec(RESIDENT)
        specs = [resident, *(common.ModelSpec(m, startup_delay=load_s) for m in SWAPPERS)]
        groups = {
            "resident": {
                "swap": False,
                "exclusive": False,
                "persistent": True,
                "members": [RESIDENT],
            },
            "swappers": {"swap": True, "exclusive": False, "members": list(SWAPPERS)},
        }
        config = common.write_config(work, specs, groups)
        direct_done = False
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            common.http_post(f"{proxy.url}/v1/chat/completions", common.chat_body(RESIDENT))
            targets = [(label, proxy.url)]
            if not direct_done:
                targets.insert(0, ("direct", resident.url))
                direct_done = True
            for name, url in targets:
                for swapping in (False, True):
                    r = asyncio.run(scenario(url, proxy.url, swapping, duration))
                    p99[(name, swapping)] = common.percentile(r.latencies, 99)
                    rows.append(
                        [
                            name,
                            "swapping" if swapping else "idle",
                            r.swaps,
                            len(r.latencies),
                            common.ms(common.percentile(r.latencies, 50)),
                            common.ms(common.percentile(r.latencies, 99)),
                            common.ms(max(r.latencies, default=float("nan"))),
                            r.errors,
                        ]
                    )
            proxy.proc.stop()
    common.print_table(
        f"Requests to `{RESIDENT}` (a model that stays loaded)",
        ["target", "other models", "swaps", "answered", "p50 ms", "p99 ms", "max ms", "errors"],
        rows,
    )
    ours_idle, ours_swap = p99[("llamaswap", False)], p99[("llamaswap", True)]
    direct_idle, direct_swap = p99[("direct", False)], p99[("direct", True)]
    common.print_summary(
        "P5",
        f"p99 to a loaded model via llamaswap {common.ms(ours_idle)} ms idle → "
        f"{common.ms(ours_swap)} ms while swapping (direct {common.ms(direct_idle)} → "
        f"{common.ms(direct_swap)} ms)",
        notes,
        common.compared(label for label, swapping in p99 if swapping),
    )


if __name__ == "__main__":
    main()
