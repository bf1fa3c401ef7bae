"""Differential check of the YAML rules against the Go llama-swap itself.

Runs only where a llama-swap build is at hand: `$LLAMASWAP_GO_BINARY`, or the reference build
in ../shared/anchors next to the checkout. Several hundred plain scalars (fixed corner cases
and seeded random ones) go into one model's `metadata` and into models' `name` fields;
llama-swap's /v1/models shows what it read, which must be what our loader reads.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port, wait_until_sync
from llamaswap.config import load_config_text
from llamaswap.config.load import parse_yaml

_DEFAULT_BINARY = Path(__file__).resolve().parents[3] / "shared" / "anchors" / "llama-swap"
BINARY = Path(os.environ.get("LLAMASWAP_GO_BINARY", _DEFAULT_BINARY))
pytestmark = pytest.mark.skipif(not BINARY.is_file(), reason="no llama-swap build at hand")

# Corner cases, space-separated (a list literal would take a line each).
CORNERS = """1:30 12:30:45 1e-2 1E3 0o17 0O17 017 08 09.5 0x1F -0x1F 0b101 -0b11 0x 0b 0b2 1_000
1__0 _1 1_000.5 .5 +.5 -.5 .5_0 ._5 .5__0 1. 0. 00 -0 +12 1e999 .5e999 -1e-400 5e-324
18446744073709551615 9223372036854775807 9223372036854775808 -9223372036854775808
-9223372036854775809 = yes no on off y n Yes ON Off True TRUE tRUE false False ~ null Null
1.2.3 2001:db8::1 .inf- .nan. 2024-01-05 2024-1-5 2023-02-29 2024-02-29 2024-13-01 0000-02-29
2024-01-05T10:00:00Z 2024-01-05t10:00:00.500Z 2024-01-05T10:00:00,5Z
2024-01-05T10:00:00+01:00 2024-01-05T10:00:00+01:60 2024-01-05T10:00:00+25:00
2024-01-05T10:00:00-00:00 2024-01-05T10:00:00 2024-01-05T24:00:00Z 2024-01-05T10:60:00Z""".split()  # noqa: SIM905


def _random_scalars(count: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "0123456789" * 4 + "+-._:eExXoObBTZ"
    out: list[str] = []
    while len(out) < count:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        if (text[0] == "-" and text[1:2] in ("", " ")) or text.endswith(":"):
            continue  # a sequence entry or a mapping key, not a scalar
        out.append(text)
    return out


VALUES = list(dict.fromkeys(CORNERS + _random_scalars(400)))


def _llama_swap_models(config: Path) -> list[dict[str, Any]]:
    port = free_port()
    with subprocess.Popen(
        [str(BINARY), "-config", str(config), "-listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        try:

            def up() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        return True
                except OSError:
                    return False

            assert wait_until_sync(up, timeout=10)
            url = f"http://127.0.0.1:{port}/v1/models"
            with urllib.request.urlopen(url, timeout=5) as resp:
                data: list[dict[str, Any]] = json.loads(resp.read())["data"]
                return data
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _same(go: Any, ours: Any) -> bool:
    if isinstance(go, bool) or isinstance(ours, bool) or go is None or ours is None:
        return go is ours
    if isinstance(go, int | float) and isinstance(ours, int | float):
        return float(go) == float(ours)  # JSON writes big floats differently
    return bool(go == ours)


@pytest.fixture(scope="module")
def go_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    path = tmp_path_factory.mktemp("go") / "config.yaml"
    path.write_text(_config())
    yield {m["id"]: m for m in _llama_swap_models(path)}


def _config() -> str:
    lines = ["models:", "  meta:", "    cmd: 'x ${PORT}'", "    metadata:"]
    lines += [f"      k{i}: {v}" for i, v in enumerate(VALUES) if not _json_unsafe(v)]
    for i, v in enumerate(VALUES):
        lines += [f"  n{i:04d}:", "    cmd: 'x ${PORT}'", f"    name: {v}"]
    return "\n".join(lines) + "\n"


def _json_unsafe(text: str) -> bool:
    """Values llama-swap cannot write as JSON (its /v1/models then answers nothing)."""
    return text in ("+.inf", "-.inf", ".inf") or text.endswith(("+24:00", "-24:00"))


def test_metadata_scalars_read_as_llama_swap_reads_them(
    go_models: dict[str, dict[str, Any]],
) -> None:
    go = go_models["meta"]["meta"]["llamaswap"]
    ours = json.loads(json.dumps(parse_yaml(_config())["models"]["meta"]["metadata"]))
    differ = [
        (v, go.get(f"k{i}"), ours.get(f"k{i}"))
        for i, v in enumerate(VALUES)
        if not _json_unsafe(v) and not _same(go.get(f"k{i}"), ours.get(f"k{i}"))
    ]
    assert differ == []


def test_string_fields_read_as_llama_swap_reads_them(
    go_models: dict[str, dict[str, Any]],
) -> None:
    config = load_config_text(_config(), env={})
    differ = [
        (v, go_models[f"n{i:04d}"].get("name", ""), config.models[f"n{i:04d}"].name)
        for i, v in enumerate(VALUES)
        if go_models[f"n{i:04d}"].get("name", "") != config.models[f"n{i:04d}"].name
    ]
    assert differ == []
