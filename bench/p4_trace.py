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

import common
from replay import MODELS, TraceResult, logged_swaps, make_trace, replay

SERVICE_S = 0.2


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
            result = asyncio.run(replay(proxy.url, trace, SERVICE_S))
            proxy.proc.stop()
            logged = logged_swaps(proxy.proc.log_path) if label == "llamaswap" else None
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
        common.compared(results),
    )


if __name__ == "__main__":
    main()
