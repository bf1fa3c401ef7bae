"""Config parse and load time: llama-swap's YAML rules against PyYAML's YAML 1.1 C loader.

CPU time of this process, best of several runs, on a generated config of many models.
`--old-src DIR` also times the whole load of another checkout (e.g. ../main/src) in a
subprocess; `--ruamel` adds ruamel.yaml (YAML 1.2, pure Python) when it is installed.

    .venv/bin/python bench/yaml_load.py [--models 2000] [--old-src ../main/src] [--ruamel]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from llamaswap.config.load import load_config_text, parse_yaml

MODEL = """  model-{i}:
    cmd: "llama-server --port ${{PORT}} -m /models/m{i}.gguf --ctx-size 8192 -ngl 99"
    name: "Model {i}"
    description: "generated model number {i}"
    aliases: [alias-{i}, other-{i}]
    ttl: 300
    env: ["CUDA_VISIBLE_DEVICES=0"]
    filters: {{stripParams: "temperature, top_p"}}
    metadata: {{size: {i}, quant: Q4_K_M, ratio: 0.5, released: 2024-01-05, tags: [a, b]}}
"""


def config(models: int) -> str:
    return "healthCheckTimeout: 60\nmodels:\n" + "".join(MODEL.format(i=i) for i in range(models))


def best(fn: Callable[[], Any], repeat: int = 5) -> float:
    """The least CPU time of `repeat` calls (other work on the machine shows in wall time)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def other_checkout(src: str, models: int) -> float:
    """The whole load time measured by this script run on another checkout's sources."""
    out = subprocess.run(
        [sys.executable, __file__, "--models", str(models), "--load-only"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        check=True,
    )
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=2000)
    ap.add_argument("--old-src", default="")
    ap.add_argument("--ruamel", action="store_true")
    ap.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    text = config(args.models)
    if args.load_only:
        print(best(lambda: load_config_text(text, env={}), 3))
        return
    print(f"config: {args.models} models, {len(text) / 1e6:.2f} MB")
    rows = [
        ("parse, PyYAML 1.1 C loader", best(lambda: yaml.load(text, Loader=yaml.CSafeLoader))),
        ("parse, YAML 1.2 (llama-swap rules)", best(lambda: parse_yaml(text))),
        ("whole load, this checkout", best(lambda: load_config_text(text, env={}), 3)),
    ]
    if args.ruamel:
        from ruamel.yaml import YAML  # type: ignore[import-not-found]  # noqa: PLC0415

        ruamel = YAML(typ="safe", pure=True)
        rows.append(("parse, ruamel.yaml (pure Python)", best(lambda: ruamel.load(text), 3)))
    if args.old_src:
        rows.append((f"whole load, {args.old_src}", other_checkout(args.old_src, args.models)))
    for label, seconds in rows:
        print(f"  {label:<40} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
