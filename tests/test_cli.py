"""The CLI entry points, run as real processes."""

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args], capture_output=True, text=True, timeout=60
    )


def test_version_with_one_or_two_dashes() -> None:
    for flag in ("--version", "-version"):
        result = run_cli(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("version: ")
