"""Shared helpers for the bench/ scripts.

Everything here is loopback-only and bounded: processes are started in their own session
(so a whole tree can be stopped), loads stop after a fixed time or count, and every wait has
a deadline. Scripts import this module as `common` (they run with bench/ on sys.path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp

# One percentile for every benchmark, the simulator included (re-exported for the scripts).
from llamaswap.testing.sim_traces import percentile

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CHAT_LUA = BENCH / "chat_post.lua"
HOST = "127.0.0.1"


# ---- environment ----------------------------------------------------------------------------


def venv_python() -> str:
    """The interpreter llamaswap is installed in (the repo's venv when there is one)."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def llamaswap_argv() -> list[str]:
    candidate = REPO / ".venv" / "bin" / "llamaswap"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("llamaswap")
    return [found] if found else [venv_python(), "-m", "llamaswap"]


def baseline_binary(explicit: Sequence[str] | None) -> list[str]:
    """Go llama-swap builds: each `--baseline PATH` (repeatable), else `llama-swap` on PATH,
    else none (the column is skipped)."""
    if explicit:
        for path in explicit:
            if not Path(path).exists():
                raise SystemExit(f"--baseline {path}: no such file")
        return list(explicit)
    found = shutil.which("llama-swap")
    return [found] if found else []


def baseline_label(path: str, baselines: Sequence[str]) -> str:
    """A baseline's column: `llama-swap`, or with its file name when several are compared."""
    return "llama-swap" if len(baselines) == 1 else f"llama-swap ({Path(path).name})"


def compared(labels: Iterable[str]) -> bool:
    """True when some llama-swap build was measured beside llamaswap."""
    return any(label.startswith("llama-swap") for label in labels)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a few seconds instead of the full run")
    p.add_argument(
        "--baseline",
        metavar="PATH",
        action="append",
        help="Go llama-swap binary to compare with (repeat to compare several builds)",
    )
    return p


def machine_note() -> str:
    try:
        import uvloop  # noqa: PLC0415 - only to report its version

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return (
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {loop}, "
        f"aiohttp {aiohttp.__version__}"
    )


# ---- ports and processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process in its own session, with its output in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def start_proc(name: str, argv: Sequence[str], workdir: Path) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log_path)


def fake_argv(port: int, model: str, *, startup_delay: float = 0.0) -> list[str]:
    argv = [venv_python(), "-m", "llamaswap.testing.fake_upstream"]
    argv += ["--port", str(port), "--model", model, "--silent"]
    if startup_delay:
        argv += ["--startup-delay", str(startup_delay)]
    return argv


def start_fake(
    workdir: Path, model: str, *, startup_delay: float = 0.0, timeout: float = 30.0
) -> tuple[Proc, str]:
    port = free_port()
    proc = start_proc(f"fake-{model}", fake_argv(port, model, startup_delay=startup_delay), workdir)
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/health", timeout, proc)
    return proc, url


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post(url: str, body: bytes = b"", timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_http(url: str, timeout: float, proc: Proc | None = None, interval: float = 0.01) -> float:
    """Poll `url` until it answers 200; return the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1.0)[0] == 200:
                return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@dataclass(frozen=True)
class ModelSpec:
    """One fake model in a generated config: a fixed port so direct runs can reach it too."""

    name: str
    port: int = field(default_factory=free_port)
    startup_delay: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def write_config(
    workdir: Path,
    models: Sequence[ModelSpec],
    groups: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    concurrency_limit: int | None = 256,
) -> Path:
    """A llama-swap config (JSON is YAML) for fake upstreams; loads in both proxies.

    `concurrency_limit` defaults to 256 because the default (10) answers 429 past c=10 and
    benchmarks go to c=64; None leaves it unwritten (each proxy's own default)."""
    config: dict[str, Any] = {"healthCheckTimeout": 30, "logLevel": "info"}
    limit = {} if concurrency_limit is None else {"concurrencyLimit": concurrency_limit}
    config["models"] = {
        m.name: {
            "cmd": " ".join(fake_argv(m.port, m.name, startup_delay=m.startup_delay)),
            "proxy": m.url,
            **limit,
        }
        for m in models
    }
    if groups:
        config["groups"] = groups
    config.update(extra or {})
    path = workdir / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Proxy:
    """A running proxy under test (llamaswap or Go llama-swap)."""

    label: str
    proc: Proc
    url: str


def start_proxy(label: str, binary: list[str], config: Path, workdir: Path) -> Proxy:
    port = free_port()
    argv = [*binary, "--config", str(config), "--listen", f"{HOST}:{port}"]
    proc = start_proc(label, argv, workdir)
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/health", 30.0, proc)
    return Proxy(label, proc, url)


def proxies_under_test(baselines: Sequence[str]) -> list[tuple[str, list[str] | None]]:
    """(label, argv or None when absent): llamaswap, then each Go llama-swap build."""
    builds: list[tuple[str, list[str] | None]] = [
        (baseline_label(b, baselines), [b]) for b in baselines
    ]
    return [("llamaswap", llamaswap_argv()), *(builds or [("llama-swap", None)])]


def running_proxies(
    baseline: Sequence[str], config: Path, workdir: Path, procs: list[Proc], notes: list[str]
) -> Iterator[Proxy]:
    """Start each proxy under test in turn (llamaswap, then llama-swap when present); an
    absent one adds a note instead. Each is stopped when the loop moves on."""
    for label, binary in proxies_under_test(baseline):
        if binary is None:
            notes.append(f"{label}: not on PATH and no --baseline given: column skipped")
            continue
        proxy = start_proxy(label, binary, config, workdir)
        procs.append(proxy.proc)
        try:
            yield proxy
        finally:
            proxy.proc.stop()


def print_summary(bench: str, text: str, notes: Sequence[str], compared: bool) -> None:
    """The notes, then the one-line summary (always the last line a script prints)."""
    for note in notes:
        print(f"note: {note}")
    print(f"{bench} summary: {text}" + ("" if compared else "; llama-swap: skipped (absent)"))
    sys.stdout.flush()


@contextlib.contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, list[Proc]]]:
    """A temp dir and a list of processes that are all stopped on the way out."""
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix=f"llamaswap-bench-{prefix}-") as tmp:
        try:
            yield Path(tmp), procs
        finally:
            for proc in reversed(procs):
                proc.stop()


def cpu_seconds(pids: Sequence[int], children: bool = False) -> float:
    """User+system CPU seconds of these processes (optionally with their children) so far."""
    import psutil  # noqa: PLC0415 - only the scripts that sample CPU need it

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in [proc, *(proc.children(recursive=True) if children else [])]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores summed."""
    import psutil  # noqa: PLC0415

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, sum(t)


def busy_fraction(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores busy between two `system_cpu()` snapshots (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


# ---- statistics and tables ------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A GitHub-markdown table (pastes straight into docs/benchmarks.md)."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    print(flush=True)


# ---- load generation -----------------------------------------------------------------------

CHAT_BODY = json.dumps(
    {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
).encode()


@dataclass
class LoadResult:
    """Outcome of one closed-loop load run."""

    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    generator: str = "python"
    processes: int = 1

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else math.nan

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def merge(self, other: LoadResult) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.seconds = max(self.seconds, other.seconds)
        self.latencies.extend(other.latencies)


def chat_body(model: str, *, stream: bool = False) -> bytes:
    body = json.loads(CHAT_BODY)
    body["model"] = model
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def closed_loop(
    url: str, body: bytes, concurrency: int, duration: float, max_requests: int = 10**9
) -> LoadResult:
    """`concurrency` keep-alive clients POSTing `body` back to back until time or count runs out."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    headers = {"Content-Type": "application/json"}
    sent = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def client() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        good = resp.status == 200
                except aiohttp.ClientError:
                    good = False
                if good:
                    result.ok += 1
                    result.latencies.append(time.perf_counter() - t0)
                else:
                    result.errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def run_async(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _worker(args: tuple[str, bytes, int, float]) -> LoadResult:
    url, body, concurrency, duration = args
    result: LoadResult = run_async(closed_loop(url, body, concurrency, duration))
    return result


def python_load(
    url: str, body: bytes, concurrency: int, duration: float, processes: int = 1
) -> LoadResult:
    """The aiohttp generator, split over `processes` forked workers (merged results)."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    merged = LoadResult(processes=processes)
    if processes == 1:
        merged.merge(_worker((url, body, concurrency, duration)))
        return merged
    with ProcessPoolExecutor(processes, mp_context=get_context("fork")) as pool:
        for part in pool.map(_worker, [(url, body, n, duration) for n in shares]):
            merged.merge(part)
    return merged


_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _wrk_seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return math.nan
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


@dataclass
class WrkResult:
    """What wrk reports: rate and latency percentiles (it keeps no raw samples)."""

    rps: float
    p50: float
    p99: float
    requests: int
    errors: int
    generator: str = "wrk"


def wrk_load(
    url: str, concurrency: int, duration: float, threads: int = 2, body: bytes | None = None
) -> WrkResult:
    """Run wrk with the chat POST script; `url` is the full /v1/chat/completions URL and
    `body` what it posts (default: `CHAT_BODY`)."""
    argv = ["wrk", f"-t{min(threads, concurrency)}", f"-c{concurrency}", f"-d{duration:g}s"]
    argv += ["--latency", "-s", str(CHAT_LUA), url]
    env = {**os.environ, "BENCH_BODY": body.decode()} if body is not None else None
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, env=env
    ).stdout
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    if not rps or not total:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50=_wrk_seconds(percentiles.get("50", "")),
        p99=_wrk_seconds(percentiles.get("99", "")),
        requests=int(total.group(1)),
        errors=errors,
    )


def have_wrk() -> bool:
    return shutil.which("wrk") is not None
