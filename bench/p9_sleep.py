"""P9: the sleep tier — what a switch between two models that do not fit together costs.

One fake 24 GiB GPU (a fake `nvidia-smi` first on PATH), two fake upstreams that each use
14 GiB and take `--startup-delay` to load. A client alternates between them, one request at a
time. Run twice through llamaswap: with `sleep: vllm` on both models (an evicted model is put
to sleep, its device memory freed, and woken on its next request: the fake upstream's
`--sleep-delay` per sleep or wake) and without (an evicted model is stopped and loaded again).
Printed: the latency of each switch (request → answer, median and max) in both runs, their
ratio, and that every request was answered.

    python bench/p9_sleep.py [--quick] [--switches N] [--load-s S] [--wake-s S]
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import common

from llamaswap.testing import fake_gpu

GIB_MIB = 1024
MODELS = ("alpha", "beta")


def config_text(load_s: float, wake_s: float, sleep: bool) -> str:
    lines = ["devices: {gpu0: {memory: 24GiB}}", "hostMemory: 64GiB", "models:"]
    for name in MODELS:
        argv = common.fake_argv(0, name, startup_delay=load_s)
        cmd = " ".join(argv).replace("--port 0", "--port ${PORT}")
        cmd += f" --memory {14 * GIB_MIB} --sleep-delay {wake_s}"
        lines += [
            f"  {name}:",
            f"    cmd: {cmd}",
            "    proxy: http://127.0.0.1:${PORT}",
            "    resources: {memory: 14GiB}",
        ]
        if sleep:
            lines.append("    sleep: vllm")
    return "\n".join(lines) + "\n"


def switch_latencies(url: str, switches: int) -> tuple[list[float], int]:
    """Seconds per request while alternating (the first two loads left out), and failures."""
    latencies: list[float] = []
    failures = 0
    for i in range(switches + 2):
        model = MODELS[i % 2]
        started = time.perf_counter()
        status, _ = common.http_post(
            f"{url}/v1/chat/completions", common.chat_body(model), timeout=120
        )
        elapsed = time.perf_counter() - started
        if status != 200:
            failures += 1
        if i >= 2:
            latencies.append(elapsed)
    return latencies, failures


def main() -> None:
    parser = common.base_parser(__doc__ or "")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--load-s", type=float, default=3.0)
    parser.add_argument("--wake-s", type=float, default=0.3)
    args = parser.parse_args()
    switches = 4 if args.quick else args.switches
    notes: list[str] = []
    rows = []
    results: dict[bool, list[float]] = {}
    with common.workspace("p9") as (work, procs):
        state = fake_gpu.write_state(work / "gpus.json", [("Fake GPU", 24 * GIB_MIB)])
        bin_dir = work / "bin"
        bin_dir.mkdir()
        fake_gpu.install(bin_dir, state)
        # The proxy and the upstreams it starts inherit these: the fake GPU is theirs.
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        os.environ[fake_gpu.STATE_ENV] = str(state)
        for sleep in (True, False):
            config = Path(work / f"p9-{'sleep' if sleep else 'stop'}.yaml")
            config.write_text(config_text(args.load_s, args.wake_s, sleep))
            proxy = common.start_proxy("llamaswap", common.llamaswap_argv(), config, work)
            procs.append(proxy.proc)
            try:
                latencies, failures = switch_latencies(proxy.url, switches)
            finally:
                proxy.proc.stop()
            results[sleep] = latencies
            notes.append(
                f"{'sleep' if sleep else 'no sleep'}: switches in order (s): "
                + " ".join(f"{x:.2f}" for x in latencies)
            )
            rows.append(
                [
                    "sleep: vllm (wake)" if sleep else "no sleep (stop + load)",
                    len(latencies),
                    common.ms(statistics.median(latencies)),
                    common.ms(max(latencies)),
                    failures,
                ]
            )
    common.print_table(
        f"P9: alternating two 14 GiB models on one 24 GiB fake GPU ({switches} switches, "
        f"load {args.load_s:g} s, sleep/wake {args.wake_s:g} s each)",
        ["run", "switches", "median switch", "max switch", "failed"],
        rows,
    )
    wake, load = statistics.median(results[True]), statistics.median(results[False])
    common.print_summary(
        "P9",
        f"median switch {common.ms(wake)} with sleep vs {common.ms(load)} without "
        f"(ratio {common.ratio(wake, load)}); times in ms",
        notes,
        compared=True,
    )


if __name__ == "__main__":
    main()
