"""The memory estimate from a GGUF header and a llama-server command line."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from llamaswap.observe.gguf import (
    DEFAULT_CTX,
    GgufError,
    estimate_from_cmd,
    kv_cache_bytes,
    read_header,
    read_metadata,
)

GEMMA = "gemma-3-270m-q4_k_m.gguf"


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _kv(key: str, value: Any) -> bytes:
    out = _string(key)
    if isinstance(value, str):
        return out + struct.pack("<I", 8) + _string(value)
    if isinstance(value, float):
        return out + struct.pack("<I", 6) + struct.pack("<f", value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = b"".join(_string(v) for v in value)
        return out + struct.pack("<IIQ", 9, 8, len(value)) + items
    if isinstance(value, list):
        kind, fmt = (6, "f") if isinstance(value[0], float) else (4, "I")
        items = struct.pack(f"<{len(value)}{fmt}", *value)
        return out + struct.pack("<IIQ", 9, kind, len(value)) + items
    return out + struct.pack("<I", 4) + struct.pack("<I", value)


def write_gguf(path: Path, meta: dict[str, Any], padding: int = 0) -> Path:
    """A GGUF v3 file with `meta` and no tensors (plus `padding` bytes standing for them)."""
    body = b"".join(_kv(k, v) for k, v in meta.items())
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)) + body + b"\0" * padding)
    return path


LLAMA = {
    "general.architecture": "llama",
    "tokenizer.ggml.tokens": ["a", "b", "c"],
    "tokenizer.ggml.scores": [1.0],
    "llama.block_count": 32,
    "llama.embedding_length": 4096,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
    "llama.context_length": 131072,
    "llama.rope.freq_base": 500000.0,
}


def test_header_of_a_written_file(tmp_path: Path) -> None:
    h = read_header(write_gguf(tmp_path / "m.gguf", LLAMA))
    assert (h.architecture, h.block_count, h.head_count, h.head_count_kv) == ("llama", 32, 32, 8)
    # key/value head sizes default to embedding / heads
    assert (h.key_length, h.value_length, h.context_length) == (128, 128, 131072)
    # Llama 3 8B at 8192 tokens, f16: 32 layers x 8192 x 8 heads x 256 x 2 bytes = 1 GiB
    assert kv_cache_bytes(h, 8192) == 1024**3
    assert kv_cache_bytes(h, 8192, "q8_0", "q8_0") == 1024**3 * 17 // 32


def test_per_layer_head_counts_take_the_largest(tmp_path: Path) -> None:
    meta = {**LLAMA, "llama.attention.head_count_kv": [8, 4, 8, 0]}
    assert read_header(write_gguf(tmp_path / "m.gguf", meta)).head_count_kv == 8


def test_arrays_are_read_only_when_asked(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", LLAMA)
    assert "tokenizer.ggml.tokens" not in read_metadata(path, lambda k: False)
    assert read_metadata(path)["tokenizer.ggml.tokens"] == ["a", "b", "c"]


def test_estimate_from_a_command(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m 1.gguf", LLAMA, padding=1000)
    size = path.stat().st_size
    e = estimate_from_cmd(f"llama-server --port 9000 -m '{path}' --ctx-size 8192 -ngl 99")
    assert e is not None
    assert (e.weights, e.kv_cache, e.ctx, e.total) == (size, 1024**3, 8192, size + 1024**3)
    assert estimate_from_cmd(f"llama-server --model='{path}'") == estimate_from_cmd(
        f"llama-server -m '{path}' -c {DEFAULT_CTX}"
    )
    # -c 0: the model's training context
    e = estimate_from_cmd(f"llama-server -m '{path}' -c 0 -ctk q8_0 -ctv q4_0")
    assert e is not None and e.ctx == 131072
    assert e.kv_cache == 32 * 131072 * 8 * (128 * 34 + 128 * 18) // 32


@pytest.mark.parametrize(
    "cmd",
    ["llama-server --port 1", "vllm serve x", "llama-server -m /no/such.gguf", "bad 'quote"],
)
def test_no_estimate(cmd: str) -> None:
    assert estimate_from_cmd(cmd) is None


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(GgufError, match="not a GGUF"):
        read_header(_junk(tmp_path))
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(write_gguf(tmp_path / "full", LLAMA).read_bytes()[:60])
    with pytest.raises(GgufError, match="truncated"):
        read_header(truncated)
    with pytest.raises(GgufError, match="lacks"):
        read_header(write_gguf(tmp_path / "x", {"general.architecture": "llama"}))
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + struct.pack("<III", 1, 0, 0))
    with pytest.raises(GgufError, match="version 1"):
        read_header(old)


def _junk(tmp_path: Path) -> Path:
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a model at all")
    return path


def _gemma() -> Path | None:
    places = [os.environ.get("GEMMA_GGUF", ""), os.environ.get("MODELS", "")]
    places.append(str(Path.home() / ".cache" / "llamaswap" / "models"))
    for place in filter(None, places):
        path = Path(place) if place.endswith(".gguf") else Path(place) / GEMMA
        if path.is_file():
            return path
    return None


def test_gemma_3_270m() -> None:
    path = _gemma()
    if path is None:
        pytest.skip(f"{GEMMA} not found - run scripts/llamacpp-setup.sh")
    h = read_header(path)
    assert (h.architecture, h.block_count, h.embedding_length) == ("gemma3", 18, 640)
    assert (h.head_count, h.head_count_kv, h.key_length, h.value_length) == (4, 1, 256, 256)
    assert h.context_length == 32768
    e = estimate_from_cmd(f"llama-server -m {path} -c 8192 --port 1")
    assert e is not None
    # 18 layers x 8192 tokens x 1 KV head x (256 + 256) x 2 bytes = 144 MiB
    assert e.kv_cache == 144 * 1024**2
    assert e.weights == path.stat().st_size
    assert 200 * 1024**2 < e.total < 500 * 1024**2
