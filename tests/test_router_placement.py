"""Which models the router places by memory, and with what need: declared `resources`,
else a GGUF estimate from `cmd`; never a model a group or a matrix decides for."""

from __future__ import annotations

from pathlib import Path

from helpers import tiny_gguf
from llamaswap.config.load import load_config_text
from llamaswap.router import placement_needs
from llamaswap.swap.placement import Need

G = 1024**3


def test_declared_resources_and_gguf_estimates(tmp_path: Path) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", 3 * G)
    config = load_config_text(
        f"""
models:
  declared:
    cmd: "llama-server --port ${{PORT}} -m {gguf}"
    resources: {{memory: 2GiB, devices: [gpu1]}}
  estimated: {{cmd: "llama-server --port ${{PORT}} -m {gguf} -c 8192"}}
  missing: {{cmd: "llama-server --port ${{PORT}} -m {tmp_path}/none.gguf"}}
  plain: {{cmd: "llama-server --port ${{PORT}}"}}
"""
    )
    assert placement_needs(config) == {
        "declared": Need(2 * G, ("gpu1",)),  # declared wins over the file
        "estimated": Need(3 * G + 8192 * 256),  # weights + KV cache at -c 8192
    }


def test_groups_and_the_matrix_decide_for_their_models(tmp_path: Path) -> None:
    config = load_config_text(
        """
models:
  a: {cmd: "x --port ${PORT}", resources: {memory: 1GiB}}
  b: {cmd: "x --port ${PORT}", resources: {memory: 1GiB}}
groups:
  g: {members: [a]}
"""
    )
    assert placement_needs(config) == {"b": Need(1 * G)}
    config = load_config_text(
        """
models:
  a: {cmd: "x --port ${PORT}", resources: {memory: 1GiB}}
routing:
  router:
    use: matrix
    settings: {matrix: {sets: {one: "a"}}}
"""
    )
    assert placement_needs(config) == {}
