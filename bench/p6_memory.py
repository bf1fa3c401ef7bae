"""P6: the proxy's resident memory (RSS, psutil) idle and under c=64 load.

Only the proxy process itself is measured, not the upstreams it spawns. Idle is read after
start-up with one model loaded; under load it is sampled every 100 ms during a c=64 run of
small chat completions (wrk when installed, else the aiohttp generator), and read again
5 s after the load stopped (does memory go back?).

    python bench/p6_memory.py [--quick] [--baseline PATH]
"""

from __future__ import annotations

import threading
import time

import common
import psutil

MODEL = "m1"
MIB = 1024 * 1024


def main() -> None:
    parser = common.base_parser(__doc__ or "")
    parser.add_argument(
        "--seconds", type=float, help="load duration (default 15; a longer run shows a plateau)"
    )
    args = parser.parse_args()
    duration, settle = (2.0, 1.0) if args.quick else (15.0, 5.0)
    if args.seconds:
        duration = args.seconds
    baseline = common.baseline_binary(args.baseline)
    generator = "wrk" if common.have_wrk() else "python"
    print(f"P6 memory — {common.machine_note()}; c=64 for {duration:g}s ({generator})")
    notes: list[str] = []
    rows = []
    summary: dict[str, tuple[float, float]] = {}
    with common.workspace("p6") as (work, procs):
        spec = common.ModelSpec(MODEL)
        config = common.write_config(work, [spec])
        for proxy in common.running_proxies(baseline, config, work, procs, notes):
            label = proxy.label
            ps = psutil.Process(proxy.proc.pid)
            idle_start = ps.memory_info().rss
            common.http_post(f"{proxy.url}/v1/chat/completions", common.chat_body(MODEL))
            time.sleep(0.5)
            idle = ps.memory_info().rss
            endpoint = f"{proxy.url}/v1/chat/completions"
            answered: list[int] = []

            def load(url: str = endpoint, out: list[int] = answered) -> None:
                if generator == "wrk":
                    out.append(common.wrk_load(url, 64, duration).requests)
                else:
                    r = common.python_load(url, common.CHAT_BODY, 64, duration, 2)
                    out.append(r.ok)

            thread = threading.Thread(target=load)
            thread.start()
            samples = []
            while thread.is_alive():
                samples.append(ps.memory_info().rss)
                time.sleep(0.1)
            thread.join()
            time.sleep(settle)
            after = ps.memory_info().rss
            peak = max(samples, default=idle)
            summary[label] = (idle / MIB, peak / MIB)
            rows.append(
                [
                    label,
                    f"{idle_start / MIB:.1f}",
                    f"{idle / MIB:.1f}",
                    f"{peak / MIB:.1f}",
                    f"{(peak - idle) / MIB:+.1f}",
                    f"{after / MIB:.1f}",
                    sum(answered),
                ]
            )
            proxy.proc.stop()
    common.print_table(
        "Proxy RSS (MiB)",
        [
            "proxy",
            "at start",
            "idle, model loaded",
            "peak under c=64",
            "growth",
            f"{settle:g}s after load",
            "requests served",
        ],
        rows,
    )
    idle_mib, peak_mib = summary["llamaswap"]
    common.print_summary(
        "P6",
        f"llamaswap RSS {idle_mib:.1f} MiB idle, {peak_mib:.1f} MiB peak at c=64",
        notes,
        common.compared(summary),
    )


if __name__ == "__main__":
    main()
