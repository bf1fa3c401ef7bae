"""How much memory a llama.cpp model will take, estimated from its GGUF file and its `cmd`.

Weights: the file's size (every tensor is loaded; mmap or not, it ends up in device memory
when all layers are offloaded). KV cache: layers x context x KV heads x (key + value head
size) x bytes per element of `--cache-type-k`/`--cache-type-v` (f16 by default), the shape
read from the GGUF header. Context: `-c`/`--ctx-size` (absent: llama-server's default 4096;
`0`: the model's training context). Sliding-window layers are counted at full context, and
compute buffers are left out: the estimate is a starting point that the measured usage
replaces once the model runs.

Only the header is read (magic, version, key/value metadata), never the tensors.
"""

from __future__ import annotations

import shlex
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "DEFAULT_CTX",
    "Estimate",
    "GgufError",
    "GgufHeader",
    "estimate_from_cmd",
    "kv_cache_bytes",
    "read_header",
    "read_metadata",
]

DEFAULT_CTX = 4096  # llama-server's context size when `-c` is not given
MAX_STRING = 1 << 24  # a metadata string longer than this means a corrupt file
# Bytes per element of the KV cache types llama.cpp accepts (block quants: block bytes/32).
CACHE_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}


class GgufError(ValueError):
    """Not a GGUF file we can read (wrong magic, old version, truncated, corrupt)."""


@dataclass(frozen=True)
class GgufHeader:
    """The model shape that sizes the KV cache."""

    architecture: str
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    context_length: int


@dataclass(frozen=True)
class Estimate:
    """Estimated device memory of a model, in bytes."""

    path: str
    ctx: int
    weights: int
    kv_cache: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


# ---- reading the header ---------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GgufError("truncated GGUF header")
    return data


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    if n > MAX_STRING:
        raise GgufError("corrupt GGUF header (string too long)")
    return _read(f, n).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if item in _SCALARS and not keep:  # vocabularies: skip without decoding
            f.seek(count * struct.calcsize(_SCALARS[item]), 1)
            return None
        values = [_value(f, item, keep) for _ in range(count)]
        return values if keep else None
    raise GgufError(f"corrupt GGUF header (value type {kind})")


def read_metadata(
    path: str | Path, wanted: Callable[[str], bool] = lambda _: True
) -> dict[str, Any]:
    """The header's key/value metadata (arrays only for keys `wanted` says yes to)."""
    try:
        with open(path, "rb") as f:
            if _read(f, 4) != b"GGUF":
                raise GgufError(f"{path} is not a GGUF file")
            version = _unpack(f, "<I")
            if version < 2:
                raise GgufError(f"GGUF version {version} is not supported (2 or later)")
            _tensors, count = _unpack(f, "<Q"), _unpack(f, "<Q")
            meta: dict[str, Any] = {}
            for _ in range(count):
                key = _string(f)
                kind = _unpack(f, "<I")
                value = _value(f, kind, keep=wanted(key))
                if value is not None:
                    meta[key] = value
            return meta
    except OSError as exc:
        raise GgufError(f"cannot read {path}: {exc}") from exc


def _int(meta: dict[str, Any], key: str, default: int | None = None) -> int:
    value = meta.get(key, default)
    if isinstance(value, list):  # per-layer head counts (some architectures): take the largest
        value = max((v for v in value if isinstance(v, int)), default=default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise GgufError(f"GGUF header lacks {key}")
    return value


def read_header(path: str | Path) -> GgufHeader:
    """The model shape from a GGUF file's header."""
    meta = read_metadata(path, wanted=lambda key: "head_count" in key)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError("GGUF header lacks general.architecture")
    embedding = _int(meta, f"{arch}.embedding_length")
    heads = _int(meta, f"{arch}.attention.head_count")
    head_dim = embedding // heads if heads else 0
    return GgufHeader(
        architecture=arch,
        block_count=_int(meta, f"{arch}.block_count"),
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=_int(meta, f"{arch}.attention.head_count_kv", heads),
        key_length=_int(meta, f"{arch}.attention.key_length", head_dim),
        value_length=_int(meta, f"{arch}.attention.value_length", head_dim),
        context_length=_int(meta, f"{arch}.context_length", DEFAULT_CTX),
    )


# ---- the estimate ---------------------------------------------------------------------------


def kv_cache_bytes(h: GgufHeader, ctx: int, cache_k: str = "f16", cache_v: str = "f16") -> int:
    """Bytes of the KV cache for `ctx` tokens (all sequences together)."""
    per_token = h.head_count_kv * (
        h.key_length * CACHE_TYPE_BYTES.get(cache_k, 2.0)
        + h.value_length * CACHE_TYPE_BYTES.get(cache_v, 2.0)
    )
    return int(h.block_count * ctx * per_token)


def _flags(argv: list[str]) -> dict[str, str]:
    """`-x value`, `--xx value` and `--xx=value` as {flag: value} (the last one wins)."""
    out: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
            out[flag] = value
        elif arg.startswith("-") and i + 1 < len(argv):
            out[arg] = argv[i + 1]
    return out


def estimate_from_cmd(cmd: str) -> Estimate | None:
    """The estimate for a llama-server-like `cmd` naming a GGUF file with `-m`/`--model`;
    None when it names none, or the file cannot be read."""
    try:
        argv = shlex.split(cmd.replace("\\\n", " "), comments=False)
    except ValueError:
        return None
    flags = _flags(argv)
    path = flags.get("--model", flags.get("-m"))
    if path is None:
        return None
    try:
        header = read_header(path)
        weights = Path(path).stat().st_size
    except (GgufError, OSError):
        return None
    ctx_text = flags.get("--ctx-size", flags.get("-c", str(DEFAULT_CTX)))
    ctx = int(ctx_text) if ctx_text.isdigit() else DEFAULT_CTX
    if ctx == 0:
        ctx = header.context_length
    cache_k = flags.get("--cache-type-k", flags.get("-ctk", "f16"))
    cache_v = flags.get("--cache-type-v", flags.get("-ctv", "f16"))
    return Estimate(path, ctx, weights, kv_cache_bytes(header, ctx, cache_k, cache_v))
