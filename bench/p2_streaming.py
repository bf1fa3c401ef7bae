"""P2: server-sent event streams — streams/s, and the latency a proxy adds to each chunk.

Two parts, each upstream direct vs through the proxy:

1. throughput: c=16 clients open streams of 10 chunks with no delay, back to back, from
   this script's own aiohttp client (which checks every event) and, when wrk is installed,
   from wrk (C, so the rate is the proxy's rather than the Python client's; its column
   also gives the proxy's CPU time per stream);
2. pacing: c=4 clients open streams of N chunks spaced by `chunk_delay`=20 ms. Each chunk's
   arrival time (from sending the request) is recorded; the proxy's added latency for chunk i
   is its mean arrival time through the proxy minus the same through the direct path. Every
   stream must deliver exactly the events sent (N chunks + the final chunk + `[DONE]`), and
   with 20 ms between chunks, no two paced chunks may arrive in one socket read (coalesced).

    python bench/p2_streaming.py [--quick] [--baseline PATH]
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import common

MODEL = "m1"
STREAM_BODY = common.chat_body(MODEL, stream=True)
JSON = {"Content-Type": "application/json"}


@dataclass
class WrkRate:
    """Streams/s from wrk, and the proxy's CPU µs per stream (None: direct, or no wrk)."""

    rate: float | None = None
    cpu_us: float | None = None
    errors: int = 0


def wrk_rate(url: str, duration: float, pid: int | None) -> WrkRate:
    if not common.have_wrk():
        return WrkRate()
    endpoint = f"{url}/v1/chat/completions?chunks=10"
    common.wrk_load(endpoint, 16, 1.0, body=STREAM_BODY)  # warm-up
    before = common.cpu_seconds([pid]) if pid else 0.0
    result = common.wrk_load(endpoint, 16, duration, body=STREAM_BODY)
    used = common.cpu_seconds([pid]) - before if pid else 0.0
    cpu_us = used / result.requests * 1e6 if pid and result.requests else None
    return WrkRate(result.rps, cpu_us, result.errors)


@dataclass
class StreamStats:
    streams: int = 0
    bad_streams: int = 0  # wrong number of events or a non-200
    seconds: float = 0.0
    offsets: list[list[float]] = field(default_factory=list)  # per stream, per event

    @property
    def rate(self) -> float:
        return self.streams / self.seconds if self.seconds else float("nan")


async def stream_once(
    session: aiohttp.ClientSession, url: str, expected: int, stats: StreamStats
) -> None:
    t0 = time.perf_counter()
    arrivals: list[float] = []
    async with session.post(url, data=STREAM_BODY, headers=JSON) as resp:
        ok = resp.status == 200
        buffer = b""
        async for data in resp.content.iter_any():
            now = time.perf_counter() - t0
            buffer += data
            events = buffer.count(b"\n\n")
            buffer = buffer[buffer.rfind(b"\n\n") + 2 :] if events else buffer
            arrivals.extend([now] * events)
    stats.streams += 1
    if not ok or len(arrivals) != expected:
        stats.bad_streams += 1
    stats.offsets.append(arrivals)


async def stream_load(
    base: str, concurrency: int, chunks: int, delay_ms: int, duration: float, max_streams: int
) -> StreamStats:
    url = f"{base}/v1/chat/completions?chunks={chunks}&chunk_delay={delay_ms}"
    stats = StreamStats()
    expected = chunks + 2
    started = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def client() -> None:
            nonlocal started
            while time.perf_counter() < deadline and started < max_streams:
                started += 1
                await stream_once(session, url, expected, stats)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        stats.seconds = time.perf_counter() - start
    return stats


def mean_offsets(stats: StreamStats) -> list[float]:
    """Mean arrival time of each event index over the complete streams."""
    complete = [o for o in stats.offsets if o]
    if not complete:
        raise SystemExit("no stream delivered any event")
    width = min(len(o) for o in complete)
    return [statistics.fmean(o[i] for o in complete) for i in range(width)]


def inter_arrivals(stats: StreamStats) -> list[float]:
    """Gaps between the paced content chunks (the final chunk and [DONE] follow at once)."""
    return [b - a for o in stats.offsets for a, b in itertools.pairwise(o[:-2])]


def main() -> None:
    args = common.base_parser(__doc__ or "").parse_args()
    duration = 1.5 if args.quick else 8.0
    chunks = 10 if args.quick else 25
    delay_ms = 20
    pacing_streams = 8 if args.quick else 40
    baseline = common.baseline_binary(args.baseline)
    print(f"P2 streaming — {common.machine_note()}")

    results: dict[str, tuple[StreamStats, StreamStats]] = {}
    by_wrk: dict[str, WrkRate] = {}
    notes: list[str] = []
    with common.workspace("p2") as (work, procs):
        spec = common.ModelSpec(MODEL)
        config = common.write_config(work, [spec])
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            common.http_post(f"{proxy.url}/v1/chat/completions", common.chat_body(MODEL))
            targets = [("direct", spec.url)] if "direct" not in results else []
            for name, url in [*targets, (label, proxy.url)]:
                pid = None if name == "direct" else proxy.proc.pid
                by_wrk[name] = wrk_rate(url, min(duration, 5.0), pid)
                rate = common.run_async(stream_load(url, 16, 10, 0, duration, 10**9))
                paced = common.run_async(
                    stream_load(url, 4, chunks, delay_ms, 60.0, pacing_streams)
                )
                results[name] = (rate, paced)
            proxy.proc.stop()

    direct_rate, direct_paced = results["direct"]
    direct_offsets = mean_offsets(direct_paced)
    rows = []
    added: dict[str, list[float]] = {}
    for name, (rate, paced) in results.items():
        offsets = mean_offsets(paced)
        diffs = [a - b for a, b in zip(offsets, direct_offsets, strict=False)]
        added[name] = diffs
        gaps = inter_arrivals(paced)
        fast, direct_fast = by_wrk[name], by_wrk["direct"]
        rows.append(
            [
                name,
                f"{fast.rate:.0f}" if fast.rate is not None else "-",
                common.ratio(fast.rate, direct_fast.rate or float("nan")) if fast.rate else "-",
                f"{fast.cpu_us:.0f}" if fast.cpu_us is not None else "-",
                f"{rate.rate:.0f}",
                common.ratio(rate.rate, direct_rate.rate),
                f"{paced.streams - paced.bad_streams}/{paced.streams}",
                sum(1 for g in gaps if g == 0.0),
                common.ms(common.percentile(gaps, 50)),
                common.ms(common.percentile(gaps, 99)),
                common.ms(offsets[0]),
                common.ms(statistics.fmean(diffs[1:-1])) if len(diffs) > 2 else "-",
                common.ms(max(diffs)),
                rate.bad_streams + fast.errors,
            ]
        )
    common.print_table(
        f"SSE: streams/s at c=16 (10 chunks, no delay); pacing at c=4 ({chunks} chunks every"
        f" {delay_ms} ms, {pacing_streams} streams)",
        [
            "target",
            "streams/s (wrk)",
            "÷ direct",
            "proxy CPU µs/stream",
            "streams/s (aiohttp client)",
            "÷ direct",
            "complete streams",
            "coalesced chunks",
            "gap p50 ms",
            "gap p99 ms",
            "first chunk ms",
            "added/chunk mean ms",
            "added/chunk max ms",
            "bad (rate run)",
        ],
        rows,
    )
    ours = results.get("llamaswap")
    assert ours is not None
    diffs = added["llamaswap"]
    ours_wrk = by_wrk["llamaswap"]
    wrk_note = f"{ours_wrk.rate:.0f} streams/s by wrk, " if ours_wrk.rate is not None else ""
    common.print_summary(
        "P2",
        f"llamaswap {wrk_note}{ours[0].rate:.0f} streams/s by the aiohttp client "
        f"({common.ratio(ours[0].rate, direct_rate.rate)}× direct), "
        f"added latency per chunk {common.ms(statistics.fmean(diffs[1:-1]))} ms mean, "
        f"chunks complete {ours[1].streams - ours[1].bad_streams}/{ours[1].streams}, "
        f"coalesced chunks {sum(1 for g in inter_arrivals(ours[1]) if g == 0.0)}",
        notes,
        common.compared(results),
    )


if __name__ == "__main__":
    main()
