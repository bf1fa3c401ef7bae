"""A llamaswap server run as a real subprocess, for the `test_http_*` suites.

`LlamaswapProcess` writes a config into a temporary directory, starts
`python -m llamaswap --config FILE --listen 127.0.0.1:<port>`, waits for `/health`, and
on `stop()` sends SIGTERM, checks for exit code 0 and checks that every fake upstream it
saw (pids from answers and from its process tree) is gone. `call()` is a small blocking
HTTP client on `http.client` that never follows redirects, so tests see exactly what the
server sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import free_port, free_port_block, pid_gone, wait_until_sync

FAKE_CMD = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"
START_TIMEOUT = 15.0
FAST_PATH_ENV = "LLAMASWAP_FAST_PATH"
# Parametrise a module's server over both ways of serving model requests.
SERVING_PATHS = [pytest.param(False, id="aiohttp"), pytest.param(True, id="fast")]
STOP_TIMEOUT = 10.0


def fake_model(name: str, *extra_lines: str, flags: str = "") -> str:
    """One `models:` entry (indented for the block) running the fake upstream on ${PORT}."""
    lines = [
        f"  {name}:",
        f"    cmd: {FAKE_CMD} --port ${{PORT}} --model ${{MODEL_ID}} {flags}".rstrip(),
        "    proxy: http://127.0.0.1:${PORT}",
        *(f"    {line}" for line in extra_lines),
    ]
    return "\n".join(lines) + "\n"


def memory_model(
    name: str, declared_gib: int, used_gib: int, *extra_lines: str, flags: str = ""
) -> str:
    """A fake model declaring `declared_gib` of device memory and holding `used_gib` (on
    the fake GPUs of `helpers.install_fake_gpus`)."""
    return fake_model(
        name,
        f"resources: {{memory: {declared_gib}GiB}}",
        *extra_lines,
        flags=f"--memory {used_gib * 1024} {flags}".strip(),
    )


@dataclass
class Reply:
    """An HTTP answer read in full."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


Body = bytes | str | dict[str, Any] | None
Headers = Mapping[str, str] | None


def call(
    base: str,
    method: str,
    path: str,
    body: Body = None,
    headers: Headers = None,
    timeout: float = 10,
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a fresh connection; dict bodies are sent as JSON. `https://` bases
    need `ssl_context`."""
    hdrs = dict(headers or {})
    payload: bytes | None
    if isinstance(body, dict):
        payload = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = body
    conn: http.client.HTTPConnection
    if base.startswith("https://"):
        host = base.removeprefix("https://")
        conn = http.client.HTTPSConnection(host, timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def chat_body(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}


@dataclass
class LlamaswapProcess:
    """A llamaswap subprocess serving `config` (a YAML text without `startPort`)."""

    tmp_path: Path
    config: str
    ports_needed: int = 16
    extra_args: tuple[str, ...] = ()
    single_dash: bool = False  # spell flags like llama-swap: `-config`, `-listen`
    listen_format: str = "127.0.0.1:{port}"  # the `--listen` value; `{port}` is this run's
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    start_port: int = 0
    upstream_pids: set[int] = field(default_factory=set)
    # Set when llamaswap serves HTTPS (`--tls-cert-file`): `base` is then https, and this
    # context (trusting the server's certificate) is used for every call.
    ssl_context: ssl.SSLContext | None = None
    # Run in the child before llamaswap starts (e.g. a resource limit).
    preexec: Callable[[], None] | None = None
    # Serve plain model requests on the fast path (`LLAMASWAP_FAST_PATH`); None leaves the
    # variable as this process has it, so a whole run can be repeated with it set.
    fast_path: bool | None = None

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.tmp_path / "llamaswap.log"

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def write_config(self, text: str) -> None:
        """Write `text` (prefixed with this run's `startPort`) as the config file."""
        self.config_path.write_text(f"startPort: {self.start_port}\n{text}")

    def start(self) -> LlamaswapProcess:
        self.start_port = free_port_block(self.ports_needed)
        self.write_config(self.config)
        self.port = free_port()
        while self.start_port <= self.port < self.start_port + self.ports_needed:
            self.port = free_port()
        dash = "-" if self.single_dash else "--"
        argv = [sys.executable, "-m", "llamaswap", f"{dash}config", str(self.config_path)]
        argv += [f"{dash}listen", self.listen_format.format(port=self.port), *self.extra_args]
        env = dict(os.environ)
        if self.fast_path is not None:
            env[FAST_PATH_ENV] = "1" if self.fast_path else "0"
        with self.log_path.open("wb") as log:
            # `preexec` only sets resource limits (async-signal-safe); it is None normally.
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec,  # noqa: PLW1509
            )
        if not wait_until_sync(self._healthy, START_TIMEOUT):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"llamaswap did not become healthy:\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"llamaswap exited {self.proc.returncode}:\n{self.log()}")
        try:
            reply = call(self.base, "GET", "/health", timeout=1, ssl_context=self.ssl_context)
            return reply.status == 200
        except OSError:
            return False

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    # -- requests ---------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        body: Body = None,
        headers: Headers = None,
        timeout: float = 10,
    ) -> Reply:
        """`call` against this server; remembers the upstream pid an answer names."""
        reply = call(self.base, method, path, body, headers, timeout, self.ssl_context)
        self._note_pid(reply)
        return reply

    def chat(self, model: str, path: str = "/v1/chat/completions") -> Reply:
        return self.call("POST", path, chat_body(model))

    def _note_pid(self, reply: Reply) -> None:
        if "application/json" not in reply.headers.get("Content-Type", ""):
            return
        with contextlib.suppress(ValueError):
            data = reply.json()
            if isinstance(data, dict) and isinstance(data.get("pid"), int):
                self.upstream_pids.add(data["pid"])

    def running(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.call("GET", "/running").json()["running"]
        return entries

    def running_models(self) -> list[str]:
        return [e["model"] for e in self.running()]

    def children(self) -> set[int]:
        """Pids of every process below llamaswap right now (and remember them)."""
        assert self.proc is not None
        try:
            pids = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()
        self.upstream_pids |= pids
        return pids

    def unload_all(self) -> None:
        self.children()
        assert self.call("GET", "/unload").status == 200
        assert wait_until_sync(lambda: not self.running(), 5.0), self.running()

    # -- teardown ---------------------------------------------------------------------------
    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.children()
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM; require exit 0 and no surviving upstream within the deadline."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.send(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"llamaswap ignored SIGTERM:\n{self.log()}") from None
            assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.log()}"
        self.assert_no_orphans()

    def assert_no_orphans(self, timeout: float = 5.0) -> None:
        pids = sorted(self.upstream_pids)
        alive = [p for p in pids if not pid_gone(p)]
        if alive and not wait_until_sync(lambda: all(pid_gone(p) for p in alive), timeout):
            survivors = [p for p in alive if not pid_gone(p)]
            for pid in survivors:  # do not leak them into the rest of the run
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"upstream pids still alive: {survivors}")

    def kill_hard(self) -> None:
        """Best-effort cleanup after a failed test (no assertions)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.upstream_pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def llamaswap(tmp_path: Path, config: str, **kwargs: Any) -> Iterator[LlamaswapProcess]:
    """Run llamaswap for the block; teardown asserts a clean exit and no orphans."""
    server = LlamaswapProcess(tmp_path, config, **kwargs)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except BaseException:
            server.kill_hard()
            raise
