"""Swap-storm soak: many clients, four models that keep evicting each other, random cancels.

Promise under test: no request is ever lost to a swap, and every answer comes from the model
that was asked for. Runs SOAK_SECONDS (default 60) against a real llamaswap process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from helpers import free_port, free_port_block, wait_until
from inprocess import fake_models_yaml

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = 16
MODELS = ["alpha", "beta", "gamma", "delta"]

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_SECONDS + 120)]


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        self.outcomes["failed"] += 1
        if len(self.failures) < 20:
            self.failures.append(what)


async def one_request(
    session: aiohttp.ClientSession, base: str, rng: random.Random, tally: Tally
) -> None:
    model = rng.choice(MODELS)
    stream = rng.random() < 0.5
    cancel = rng.random() < 0.1
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{base}/v1/chat/completions?chunks=4&chunk_delay=5"
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                tally.fail(f"{model}: HTTP {resp.status} {await resp.text()}")
                return
            if cancel:
                await resp.content.readany()
                tally.outcomes["cancelled"] += 1
                return  # leaving the block closes the connection mid-answer
            if not stream:
                answer = await resp.json()
                if answer.get("model") != model:
                    tally.fail(f"asked {model}, answered by {answer.get('model')}")
                    return
            else:
                text = await resp.text()
                events = [
                    line[5:].strip() for line in text.splitlines() if line.startswith("data:")
                ]
                if not events or events[-1] != "[DONE]":
                    tally.fail(f"{model}: stream did not end with [DONE]: {text[-200:]!r}")
                    return
                for event in events[:-1]:
                    chunk = json.loads(event)
                    if chunk.get("model") != model:
                        tally.fail(f"asked {model}, chunk from {chunk.get('model')}")
                        return
            tally.outcomes["ok"] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.fail(f"{model}: {type(exc).__name__}: {exc}")


async def client(base: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            await one_request(session, base, rng, tally)


# Each policy soaks for half the time. `batch` runs with the default admission (requests
# queue), `fifo` with a written concurrencyLimit (llama-swap's reservations); 16 clients never
# reach either bound, so any refusal is a failure.
POLICIES = {"batch": "", "fifo": "concurrencyLimit: 64"}


# (policy, fast path): both policies on the default serving path, and batch on aiohttp alone.
RUNS = [
    pytest.param(("batch", True), id="batch"),
    pytest.param(("fifo", True), id="fifo"),
    pytest.param(("batch", False), id="batch-aiohttp"),
]


@pytest.fixture(params=RUNS)
def soak_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    policy, fast_path = request.param
    config = tmp_path / "soak.yaml"
    config.write_text(
        f"startPort: {free_port_block(8)}\nhealthCheckTimeout: 30\n"
        + f"routing:\n  scheduler:\n    policy: {policy}\n"
        + fake_models_yaml(MODELS, extra=POLICIES[policy])
        + "groups:\n"
        + "  left: {swap: true, exclusive: true, members: [alpha, beta]}\n"
        + "  right: {swap: true, exclusive: false, members: [gamma, delta]}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamaswap",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            *(() if fast_path else ("--no-fast-path",)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{port}", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, "llamaswap did not shut down cleanly"


async def test_swap_storm_loses_no_request(
    soak_server: tuple[str, subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, proc = soak_server

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/health") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(healthy, timeout=20, message="llamaswap up")
    tally = Tally()
    seconds = SOAK_SECONDS / len(RUNS)  # the soak's time is shared by its runs
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(base, seed, deadline, tally) for seed in range(CLIENTS)))
    with capsys.disabled():  # the counts belong in CI's log
        print(f"\nsoak: {dict(tally.outcomes)} in {seconds:.0f}s with {CLIENTS} clients")
    assert proc.poll() is None, "llamaswap died during the soak"
    assert tally.outcomes["ok"] > CLIENTS * 5, tally.outcomes
    assert tally.outcomes["failed"] == 0, tally.failures
