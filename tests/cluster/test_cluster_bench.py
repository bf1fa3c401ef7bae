"""P10 (`bench/p10_cluster.py --quick`) runs in CI: a two-node Ray cluster against two
independent llamaswaps fed round robin, every request answered on both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "p10_cluster.py"


def test_the_cluster_benchmark_runs_and_answers_every_request() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("P10 summary: swaps "), done.stdout[-3000:]
    errors = re.search(r"errors (\d+) vs (\d+)", summary)
    assert errors is not None and errors.groups() == ("0", "0"), summary
