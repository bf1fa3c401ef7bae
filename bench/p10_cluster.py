"""P10: a llamaswap cluster on Ray Serve vs the same machines as independent llamaswaps.

Two simulated machines on this one (a `ray.cluster_utils.Cluster` with resources `box_a`,
`box_b`), each able to hold one model at a time (one group, `swap` and `exclusive`), four
models whose fake upstreams take `--load-s` to become healthy. One seeded trace (Poisson
arrivals, sticky model choice, `--service-s` per request), replayed open loop against:

* cluster: `llamaswap cluster`'s deployment (residency-aware request router);
* round robin: two independent `llamaswap --config` processes, request i to machine i % 2
  (what static `peers` in front of blind boxes amount to).

Reported: swaps (a model newly seen on a machine in /running, polled every 50 ms), wait
(latency minus service) p50 / p99, errors, makespan; then the per-request overhead of the
cluster path vs one llamaswap for a ready model (sequential requests, p50 / p99).

    python bench/p10_cluster.py [--quick] [--requests N] [--span S]
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import common
from replay import Arrival, make_trace

MODELS = ("alpha", "beta", "gamma", "delta")


@dataclass
class Result:
    swaps: int
    waits: list[float]
    errors: int
    makespan: float


def free_block(count: int) -> int:
    """First of `count` consecutive free ports below the ephemeral range (for `startPort`)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind((common.HOST, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def node_config(workdir: Path, load_s: float, cluster: bool, name: str = "node") -> Path:
    """Four fake models, one at a time per machine; with the `cluster:` section if asked."""
    config: dict[str, Any] = {
        "healthCheckTimeout": 30,
        "logLevel": "warn",
        "models": {
            m: {
                "cmd": " ".join(common.fake_argv(0, m, startup_delay=load_s)).replace(
                    "--port 0", "--port ${PORT}"
                ),
                "proxy": "http://127.0.0.1:${PORT}",
                "concurrencyLimit": 256,
            }
            for m in MODELS
        },
        "groups": {"one": {"swap": True, "exclusive": True, "members": list(MODELS)}},
    }
    if cluster:
        config["cluster"] = {
            "nodes": {
                "box-a": {"resources": {"box_a": 1}, "startPort": free_block(len(MODELS))},
                "box-b": {"resources": {"box_b": 1}, "startPort": free_block(len(MODELS))},
            }
        }
    else:
        config["startPort"] = free_block(len(MODELS))
    path = workdir / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


async def poll_swaps(urls: Sequence[str], stop: asyncio.Event) -> int:
    """Models newly seen per machine in /running (`node` field, or which proxy answered)."""
    seen: set[tuple[str, str]] = set()
    starts = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            now: set[tuple[str, str]] = set()
            for i, url in enumerate(urls):
                try:
                    async with session.get(f"{url}/running") as resp:
                        entries = json.loads(await resp.read()).get("running", [])
                except (aiohttp.ClientError, ValueError):
                    continue
                now |= {(e["model"], str(e.get("node", i))) for e in entries}
            starts += len(now - seen)
            seen = now
            await asyncio.sleep(0.05)
    return starts


async def replay(
    urls: Sequence[str], pick: Callable[[int], str], trace: list[Arrival], service_s: float
) -> Result:
    waits: list[float] = []
    errors = 0
    finished: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_swaps(urls, stop))
    query = f"/v1/chat/completions?wait={round(service_s * 1000)}ms"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        start = time.perf_counter()

        async def one(i: int, a: Arrival) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, start + a.at - time.perf_counter()))
            sent = time.perf_counter()
            try:
                async with session.post(
                    pick(i) + query,
                    data=common.chat_body(a.model),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            done = time.perf_counter()
            finished.append(done - start)
            if ok:
                waits.append(done - sent - service_s)
            else:
                errors += 1

        await asyncio.gather(*(one(i, a) for i, a in enumerate(trace)))
    stop.set()
    swaps = await poller
    return Result(swaps, waits, errors, max(finished) - trace[0].at)


def overhead(url: str, model: str, n: int) -> tuple[float, float]:
    """p50 / p99 seconds of sequential chat requests to a ready model."""
    common.http_post(f"{url}/v1/chat/completions", common.chat_body(model), timeout=60)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = common.http_post(f"{url}/v1/chat/completions", common.chat_body(model))
        assert status == 200
        times.append(time.perf_counter() - t)
    return common.percentile(times, 50), common.percentile(times, 99)


def row(label: str, r: Result) -> list[object]:
    return [
        label,
        r.swaps,
        common.ms(common.percentile(r.waits, 50)) if r.waits else "-",
        common.ms(common.percentile(r.waits, 99)) if r.waits else "-",
        r.errors,
        f"{r.makespan:.1f}",
    ]


def run_cluster(
    workdir: Path, trace: list[Arrival], args: Any, overhead_n: int
) -> tuple[Result, tuple[float, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ray  # noqa: PLC0415 - the optional `ray` extra
        from ray.cluster_utils import Cluster  # noqa: PLC0415

        from llamaswap.cluster.app import (  # noqa: PLC0415
            ClusterOptions,
            deploy,
            read_cluster_config,
            teardown,
        )
    path = node_config(workdir, args.load_s, cluster=True, name="cluster")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"llamaswap": 1, "box_a": 1}},
    )
    cluster.add_node(num_cpus=1, resources={"llamaswap": 1, "box_b": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        port = common.free_port()
        text, config = read_cluster_config(path)
        url = deploy(ClusterOptions(path, port=port), text, config)
        result = common.run_async(replay([url], lambda _: url, trace, args.service_s))
        return result, overhead(url, MODELS[0], overhead_n)
    finally:
        teardown()
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = common.base_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--span", type=float, default=40.0, help="seconds the trace spans")
    parser.add_argument("--load-s", type=float, default=1.0)
    parser.add_argument("--service-s", type=float, default=0.3)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.span = 24, 12.0
    overhead_n = 50 if args.quick else 300
    trace = make_trace(args.requests, args.span, seed=11, stay=0.7, models=MODELS)
    notes = [common.machine_note()]
    with common.workspace("p10") as (workdir, procs):
        cluster_result, cluster_cost = run_cluster(workdir, trace, args, overhead_n)
        # Each box has its own ports (both are this machine).
        config_a = node_config(workdir, args.load_s, cluster=False, name="box-a")
        config_b = node_config(workdir, args.load_s, cluster=False, name="box-b")
        a = common.start_proxy("box-a", common.llamaswap_argv(), config_a, workdir)
        procs.append(a.proc)
        b = common.start_proxy("box-b", common.llamaswap_argv(), config_b, workdir)
        procs.append(b.proc)
        urls = [a.url, b.url]
        rr = common.run_async(replay(urls, lambda i: urls[i % 2], trace, args.service_s))
        single_cost = overhead(a.url, MODELS[0], overhead_n)
    common.print_table(
        f"P10: {args.requests} requests over {args.span:.0f} s, {len(MODELS)} models, "
        f"2 machines holding one model each, load {args.load_s} s, service {args.service_s} s",
        ["routing", "swaps", "wait p50 ms", "wait p99 ms", "errors", "makespan s"],
        [row("cluster (residency)", cluster_result), row("round robin", rr)],
    )
    common.print_table(
        "P10: per-request latency to a ready model (sequential)",
        ["path", "p50 ms", "p99 ms"],
        [
            ["one llamaswap", common.ms(single_cost[0]), common.ms(single_cost[1])],
            ["cluster (Serve proxy, ingress, node)", *map(common.ms, cluster_cost)],
        ],
    )
    summary = (
        f"swaps {cluster_result.swaps} vs {rr.swaps} (round robin), wait p99 "
        f"{common.ms(common.percentile(cluster_result.waits, 99))} vs "
        f"{common.ms(common.percentile(rr.waits, 99))} ms, errors {cluster_result.errors} vs "
        f"{rr.errors}; cluster path p50 {common.ms(cluster_cost[0])} ms vs "
        f"{common.ms(single_cost[0])} ms for one llamaswap"
    )
    common.print_summary("P10", summary, notes, compared=True)


if __name__ == "__main__":
    sys.exit(main())
