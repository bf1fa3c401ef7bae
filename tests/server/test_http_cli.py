"""The command line as a new user meets it, run as real processes (issue 12, item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from llamaswap_proc import fake_model, llamaswap

ONE_MODEL = "models:\n" + fake_model("first")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_with_short_and_long_flag(flag: str) -> None:
    for args in ((flag,), ("check-config", flag), ("serve", flag)):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: llamaswap"), result.stdout
        assert "--config" in result.stdout


@pytest.mark.parametrize("listen", [":99999", "127.0.0.1:65536", ":0", "70000", "host:", "x:y"])
def test_listen_out_of_range_or_malformed_is_refused(tmp_path: Path, listen: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(ONE_MODEL)
    result = run_cli("--config", str(config), "--listen", listen)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '--listen': '{listen}'" in result.stderr
    expected = "port must be 1-65535" if listen[-1].isdigit() else "expected host:port"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bare_port_listens_on_loopback_only_and_says_so(tmp_path: Path) -> None:
    with llamaswap(tmp_path, ONE_MODEL, listen_format="{port}") as server:
        assert server.proc is not None
        listeners = [
            c.laddr
            for c in psutil.Process(server.proc.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(a.ip, a.port) for a in listeners] == [("127.0.0.1", server.port)]
        log = server.log()
        assert f"--listen {server.port} has no host: listening on 127.0.0.1:{server.port}" in log
        url = f"http://127.0.0.1:{server.port}"
        assert f"use {url}/v1 (UI: {url}/ui/)" in log


def test_startup_line_names_urls_for_every_interface(tmp_path: Path) -> None:
    with llamaswap(tmp_path, ONE_MODEL, listen_format=":{port}") as server:
        url = f"http://127.0.0.1:{server.port}"
        assert f"use {url}/v1 (UI: {url}/ui/)" in server.log()


def test_check_config_takes_the_file_as_argument_or_option(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(ONE_MODEL)
    positional = run_cli("check-config", str(config))
    for args in (("--config", str(config)), ("-config", str(config))):
        result = run_cli("check-config", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == positional.stdout
        assert "first" in result.stdout
    missing = run_cli("check-config")
    assert missing.returncode == 2
    assert "check-config FILE (or --config FILE)" in missing.stderr


def test_start_failure_is_logged_as_a_warning(tmp_path: Path) -> None:
    config = ONE_MODEL + (
        f'  broken:\n    cmd: {sys.executable} -c "import sys; sys.exit(3)"\n'
        "    proxy: http://127.0.0.1:9\n"
    )
    with llamaswap(tmp_path, config) as server:
        assert server.chat("broken").status == 500
        failure = [line for line in server.log().splitlines() if "swap to broken" in line]
        assert failure and all(line.startswith("[WARNING]") for line in failure), failure
        assert server.chat("first").status == 200
        done = [line for line in server.log().splitlines() if "swap to first" in line]
        assert done and done[0].startswith("[INFO]"), done


# -- check-config finds what can never work, and warns of what is ignored (item 8) ----------

TYPO_CONFIG = ONE_MODEL + "    proxi: http://127.0.0.1:1\nhealthCheckTimout: 30\n"
EMPTY_MODEL = ONE_MODEL + "  empty:\n    # cmd: llama-server --port ${PORT}\n"


def test_check_config_warns_of_unknown_keys_and_still_passes(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(TYPO_CONFIG)
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"warnings in {config}:" in result.stderr
    assert 'models.first.proxi: unknown key "proxi" (ignored; did you mean "proxy"?)' in (
        result.stderr
    )
    assert 'did you mean "healthCheckTimeout"?' in result.stderr
    assert "models (1)" in result.stdout


def test_check_config_refuses_a_model_without_cmd_but_the_server_loads_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(EMPTY_MODEL)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 1
    assert f"invalid config {config}:" in result.stderr
    assert "models.empty.cmd: model empty has no cmd: it can never start" in result.stderr
    with llamaswap(tmp_path, EMPTY_MODEL) as server:
        assert "[ERROR] config: models.empty.cmd: model empty has no cmd" in server.log()
        reply = server.chat("empty")
        assert reply.status == 500
        assert "empty command" in reply.json()["error"]["message"]
        assert server.chat("first").status == 200


def test_server_logs_unknown_keys_as_warnings(tmp_path: Path) -> None:
    with llamaswap(tmp_path, TYPO_CONFIG) as server:
        assert '[WARNING] config: models.first.proxi: unknown key "proxi"' in server.log()
        assert server.chat("first").status == 200
