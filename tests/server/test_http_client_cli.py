"""`llamaswap ps|load|unload|run|logs` run as a user runs them: `python -m llamaswap …`
subprocesses against a real llamaswap over fake upstreams (issue 11, item 4).

The fake upstream streams `asdf` ten times. `talky` runs it without `--silent`, so its
process output (one line per request) shows in `llamaswap logs talky`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest
from llamaswap_proc import LlamaswapProcess, chat_body, fake_model, llamaswap

from helpers import free_port, wait_until_sync

KEY = "sk-cli-test"
TALKY = (
    "  talky:\n"
    f"    cmd: {sys.executable} -m llamaswap.testing.fake_upstream --port ${{PORT}}"
    " --model ${MODEL_ID}\n"
    "    proxy: http://127.0.0.1:${PORT}\n"
)
MODELS = fake_model("alpha", "ttl: 300") + fake_model("beta") + TALKY
# One group that does not swap: several models can run at once.
GROUPS = "groups:\n  all:\n    swap: false\n    members: [alpha, beta, talky]\n"
CONFIG = f"apiKeys: [{KEY}]\nmodels:\n{MODELS}{GROUPS}"
AUTH = {"Authorization": f"Bearer {KEY}"}
STREAMED = "asdf" * 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaswapProcess]:
    with llamaswap(tmp_path_factory.mktemp("cli"), CONFIG) as proc:
        yield proc


@pytest.fixture
def idle(server: LlamaswapProcess) -> LlamaswapProcess:
    server.children()
    assert server.call("GET", "/unload", headers=AUTH).status == 200
    assert wait_until_sync(lambda: not _running(server), 5.0)
    return server


def _running(server: LlamaswapProcess) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = server.call("GET", "/running", headers=AUTH).json()["running"]
    return entries


def _env(url: str | None, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMASWAP_")}
    if url is not None:
        env["LLAMASWAP_URL"] = url
    if key is not None:
        env["LLAMASWAP_API_KEY"] = key
    return env


def cli(
    server: LlamaswapProcess | None, *args: str, key: str | None = KEY, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`llamaswap ARGS` aimed at `server` through the environment, as a user would set it."""
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(None if server is None else server.base, key),
    )


def _table(stdout: str) -> list[list[str]]:
    """The ps table's rows, split on its column gaps (3+ spaces)."""
    lines = stdout.rstrip("\n").splitlines()
    return [[cell.strip() for cell in line.split("   ") if cell.strip()] for line in lines]


def _last_request_body(server: LlamaswapProcess) -> dict[str, Any]:
    """The body of the last recorded model request, from its capture."""
    rows = server.call("GET", "/api/metrics/activity?limit=1", headers=AUTH).json()["data"]
    capture = server.call("GET", f"/api/captures/{rows[0]['id']}", headers=AUTH).json()
    body: dict[str, Any] = json.loads(base64.b64decode(capture["req_body"]))
    return body


# ---- ps, load, unload ----------------------------------------------------------------------


def test_ps_shows_nothing_then_the_loaded_model(idle: LlamaswapProcess) -> None:
    before = cli(idle, "ps")
    assert before.returncode == 0, before.stderr
    assert _table(before.stdout) == [
        ["MODEL", "STATE", "PID", "UPTIME", "IDLE LEFT", "IN FLIGHT", "QUEUED", "LOAD TIME"]
    ]

    loaded = cli(idle, "load", "alpha")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "alpha is loaded\n"
    # `load` answers once the model is ready: no waiting needed here.
    assert [(e["model"], e["state"]) for e in _running(idle)] == [("alpha", "ready")]

    after = cli(idle, "ps")
    assert after.returncode == 0, after.stderr
    header, row = _table(after.stdout)
    fields = dict(zip(header, row, strict=True))
    assert fields["MODEL"] == "alpha"
    assert fields["STATE"] == "ready"
    assert int(fields["PID"]) in idle.children()
    assert fields["UPTIME"].endswith("s")
    # ttl 300 and idle since it became ready: between 4m and 5m left.
    assert fields["IDLE LEFT"].startswith("4m") or fields["IDLE LEFT"] == "5m00s"
    assert (fields["IN FLIGHT"], fields["QUEUED"]) == ("0", "0")
    assert fields["LOAD TIME"].endswith("s") and float(fields["LOAD TIME"][:-1]) >= 0


def test_ps_says_forever_for_a_model_without_ttl(idle: LlamaswapProcess) -> None:
    assert cli(idle, "load", "beta").returncode == 0
    header, row = _table(cli(idle, "ps").stdout)
    assert dict(zip(header, row, strict=True))["IDLE LEFT"] == "forever"


def test_unload_one_model_then_every_model(idle: LlamaswapProcess) -> None:
    assert cli(idle, "load", "alpha").returncode == 0
    assert cli(idle, "load", "talky").returncode == 0
    assert sorted(e["model"] for e in _running(idle)) == ["alpha", "talky"]

    one = cli(idle, "unload", "alpha")
    assert one.returncode == 0, one.stderr
    assert one.stdout == "alpha is unloaded\n"
    assert [e["model"] for e in _running(idle)] == ["talky"]

    every = cli(idle, "unload")
    assert every.returncode == 0, every.stderr
    assert every.stdout == "every model is unloaded\n"
    assert _running(idle) == []


@pytest.mark.parametrize("command", ["load", "unload"])
def test_unknown_model_is_a_one_line_404(server: LlamaswapProcess, command: str) -> None:
    result = cli(server, command, "nope")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"llamaswap: {server.base} answered 404: model nope not found\n"


# ---- run -----------------------------------------------------------------------------------


def test_run_with_a_prompt_streams_the_answer(server: LlamaswapProcess) -> None:
    result = cli(server, "run", "alpha", "say something")
    assert result.returncode == 0, result.stderr
    assert result.stdout == STREAMED + "\n"
    sent = _last_request_body(server)
    assert sent["stream"] is True
    assert sent["messages"] == [{"role": "user", "content": "say something"}]


def test_a_prompt_starting_with_a_dash_follows_double_dash(server: LlamaswapProcess) -> None:
    result = cli(server, "run", "alpha", "--", "-1 is odd")
    assert result.returncode == 0, result.stderr
    assert _last_request_body(server)["messages"] == [{"role": "user", "content": "-1 is odd"}]


def test_run_reads_prompts_from_stdin_and_keeps_the_history(server: LlamaswapProcess) -> None:
    result = cli(server, "run", "beta", stdin="first question\n\nsecond question\n")
    assert result.returncode == 0, result.stderr
    # Piped input: no `>>>` prompt, one answer line per question (the empty line is skipped).
    assert result.stdout == (STREAMED + "\n") * 2
    assert _last_request_body(server)["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": STREAMED},
        {"role": "user", "content": "second question"},
    ]


def test_run_stops_at_bye(server: LlamaswapProcess) -> None:
    result = cli(server, "run", "beta", stdin="hello\n/bye\nnever sent\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == STREAMED + "\n"
    assert _last_request_body(server)["messages"] == [{"role": "user", "content": "hello"}]


def test_run_of_an_unknown_model_fails_in_one_line(server: LlamaswapProcess) -> None:
    result = cli(server, "run", "nope", "hi")
    assert result.returncode == 1
    assert result.stderr.startswith(f"llamaswap: {server.base} answered 404: ")
    assert result.stderr.count("\n") == 1


# ---- logs ----------------------------------------------------------------------------------


def test_logs_of_a_model_prints_its_process_output(server: LlamaswapProcess) -> None:
    assert server.call("POST", "/v1/chat/completions", chat_body("talky"), AUTH).status == 200
    result = cli(server, "logs", "talky")
    assert result.returncode == 0, result.stderr
    assert "POST /v1/chat/completions 200" in result.stdout
    proxy = cli(server, "logs")  # the stdout view: llamaswap's own log by default
    assert proxy.returncode == 0, proxy.stderr
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in proxy.stdout


def test_logs_follow_prints_new_lines_as_they_come(server: LlamaswapProcess) -> None:
    assert cli(server, "load", "talky").returncode == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "llamaswap", "logs", "talky", "-f"],
        stdout=subprocess.PIPE,
        env=_env(server.base, KEY),
    )
    assert follower.stdout is not None
    lines, pump = _line_reader(follower.stdout)
    try:
        server.call("POST", "/v1/chat/completions?marker=followed", chat_body("talky"), AUTH)
        seen = []
        while True:  # every line until the new request's, within the deadline
            line = lines.get(timeout=10)
            assert line, "the follower ended"
            seen.append(line)
            if "marker=followed" in line:
                break
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(10)
        pump.join(10)  # the pipe has ended: the reader is done with it
        follower.stdout.close()


def _line_reader(stream: IO[bytes]) -> tuple[queue.Queue[str], threading.Thread]:
    """Lines of `stream` as they arrive ("" at its end), read by a daemon thread."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for raw in iter(stream.readline, b""):
            out.put(raw.decode("utf-8", "replace"))
        out.put("")

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return out, thread


def test_logs_of_an_unknown_model_fails_in_one_line(server: LlamaswapProcess) -> None:
    result = cli(server, "logs", "nope")
    assert result.returncode == 1
    assert result.stderr.startswith(f"llamaswap: {server.base} answered 400: invalid logger")


# ---- errors and settings -------------------------------------------------------------------


@pytest.mark.parametrize("args", [("ps",), ("load", "alpha"), ("run", "alpha", "hi"), ("logs",)])
def test_no_server_is_a_one_line_error(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "llamaswap", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(None, None),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"llamaswap: no llamaswap server answers at {url}: Connection refused\n"


def test_a_wrong_key_is_refused_without_showing_it(server: LlamaswapProcess) -> None:
    wrong = cli(server, "ps", key="sk-wrong-secret")
    assert wrong.returncode == 1
    assert wrong.stderr == f"llamaswap: {server.base} refused the API key (401)\n"
    assert "sk-wrong-secret" not in wrong.stdout + wrong.stderr
    missing = cli(server, "ps", key=None)
    assert missing.returncode == 1
    assert "wants an API key (401): give --api-key or set LLAMASWAP_API_KEY" in missing.stderr


def test_url_and_key_options_win_over_the_environment(server: LlamaswapProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llamaswap", "ps", "-url", server.base, "--api-key", KEY],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(f"http://127.0.0.1:{free_port()}", "sk-wrong"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MODEL")


def test_help_lists_the_client_commands_and_serve_stays_the_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llamaswap", "-h"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for command in ("ps", "load", "unload", "run", "logs", "serve"):
        assert f"\n  {command} " in result.stdout
    assert "--config PATH" in result.stdout  # `llamaswap --config X` still serves
