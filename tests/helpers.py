"""Small shared test helpers: free ports and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from llamaswap.testing import fake_gpu

FAKE_UPSTREAM = [sys.executable, "-m", "llamaswap.testing.fake_upstream"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fake_upstream_cmd(port: int, *flags: str) -> str:
    """The `cmd` string that runs the fake upstream on `port` with extra `flags`."""
    return " ".join([*FAKE_UPSTREAM, "--port", str(port), *flags])


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 (the shared helper's agreed signature)
    interval: float = 0.005,
    message: str = "condition",
) -> None:
    """Poll `predicate` (sync or async) until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Blocking variant for code outside an event loop; returns the final truth value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """First port of `count` consecutive free ports at a random base in [low, high).

    The range stays below Linux's ephemeral ports (32768+), where `free_port()` and every
    outgoing connection take theirs, so a block handed to `${PORT}` is not raced for.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found in {low}-{high}")


def port_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def outside_server(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A fake upstream that is not ours on `port`, logging each request it gets to `log`."""
    with log.open("wb") as sink:
        proc = subprocess.Popen([*FAKE_UPSTREAM, "--port", str(port), "--model", "x"], stdout=sink)
    try:
        if not wait_until_sync(lambda: port_listening(port), 10.0):
            raise AssertionError(f"the outside server did not listen on {port}")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def install_fake_gpus(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpus: Sequence[tuple[str, int]],
    tool: str = "nvidia-smi",
) -> Path:
    """Fake GPUs ((name, MiB) each) behind a fake `tool` (`nvidia-smi`, or `rocm-smi`) put
    first on PATH, for this test and the processes it starts; returns the state file."""
    state = fake_gpu.write_state(tmp_path / "gpus.json", gpus)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_gpu.install(bin_dir, state, tool)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(fake_gpu.STATE_ENV, str(state))
    return state


def tiny_gguf(path: Path, size: int) -> Path:
    """A GGUF v3 header of a one-layer llama (KV cache: 256 bytes a token at f16), grown
    sparsely to `size` bytes standing for the weights."""

    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    meta = text("general.architecture") + struct.pack("<I", 8) + text("llama")
    numbers = {
        "llama.block_count": 1,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 1,
        "llama.attention.head_count_kv": 1,
        "llama.context_length": 4096,
    }
    for key, value in numbers.items():
        meta += text(key) + struct.pack("<II", 4, value)
    with path.open("wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 + len(numbers)) + meta)
        f.truncate(size)
    return path
