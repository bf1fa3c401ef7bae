"""The activity store file with a real llamaswap: llama-swap's file is read and written, the old
schema is migrated at startup, an unusable file stops the start (or a reload) with its name and
never a traceback, and a full disk pauses recording while requests are still served."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from llamaswap_proc import LlamaswapProcess, fake_model, llamaswap

from helpers import free_port, free_port_block, wait_until_sync

FIXTURE = Path(__file__).parent.parent / "observe" / "data" / "llama-swap-activity.db"
STORE_START_TIMEOUT = 20.0


def store_config(path: Path) -> str:
    return f"store:\n  path: {path}\nmodels:\n" + fake_model("m1")


def activity(server: LlamaswapProcess) -> list[dict[str, Any]]:
    reply = server.call("GET", "/api/metrics/activity?order=asc&limit=999")
    assert reply.status == 200, reply.text
    rows: list[dict[str, Any]] = reply.json()["data"]
    return rows


def start_failure(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    """Run llamaswap on `config`, which must not start; its exit and output."""
    path = tmp_path / "config.yaml"
    path.write_text(config)
    argv = [sys.executable, "-m", "llamaswap", "--config", str(path)]
    argv += ["--listen", f"127.0.0.1:{free_port()}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=STORE_START_TIMEOUT)


# ---- one file for both programs -------------------------------------------------------------


def test_llamaswap_serves_the_rows_llama_swap_wrote_and_adds_its_own(tmp_path: Path) -> None:
    path = tmp_path / "activity.db"
    shutil.copy(FIXTURE, path)
    with llamaswap(tmp_path, store_config(path)) as server:
        assert [r["id"] for r in activity(server)] == [1, 2, 3]
        assert server.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(server)) == 4, 5.0)
        rows = activity(server)
        assert rows[1]["error_msg"] == "fake failure 500"
        assert rows[3]["id"] == 4 and rows[3]["model"] == "m1"
        stats = server.call("GET", "/api/metrics/stats").json()
        assert stats["total_requests"] == 4
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_id FROM goose_db_version").fetchall() == [(0,), (1,)]
    db.close()


def test_an_old_llamaswap_file_is_migrated_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE activity (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
        " model TEXT NOT NULL, req_path TEXT NOT NULL, resp_content_type TEXT NOT NULL,"
        " resp_status_code INTEGER NOT NULL, cache_tokens INTEGER NOT NULL,"
        " draft_tokens INTEGER NOT NULL, draft_acc_tokens INTEGER NOT NULL,"
        " input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
        " prompt_per_second REAL NOT NULL, tokens_per_second REAL NOT NULL,"
        " duration_ms INTEGER NOT NULL, error_msg TEXT NOT NULL DEFAULT '',"
        " metadata_json TEXT NOT NULL DEFAULT '');"
        "INSERT INTO activity VALUES (1, 1796588000.5, 'before', '/v1/x', 'application/json',"
        " 200, -1, -1, -1, 4, 2, 0, 0, 9, '', '');"
    )
    db.commit()
    db.close()
    with llamaswap(tmp_path, store_config(path)) as server:
        rows = activity(server)
        assert [(r["id"], r["model"]) for r in rows] == [(1, "before")]
        assert server.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(server)) == 2, 5.0)
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(activity)")]
    db.close()
    assert columns[1:3] == ["ts_created", "model_id"]


# ---- unusable files stop the start, naming the file ------------------------------------------


def assert_refused(result: subprocess.CompletedProcess[str], path: Path, words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(path) in output and words in output, output
    assert "Traceback" not in output, output


def test_a_corrupt_store_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"not sqlite\n" * 1000)
    result = start_failure(tmp_path, store_config(path))
    assert_refused(result, path, "is not a SQLite database")
    assert path.read_bytes() == b"not sqlite\n" * 1000  # left as it was


def test_another_programs_database_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    result = start_failure(tmp_path, store_config(path))
    assert_refused(result, path, "is not an activity store (it holds the tables orders")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted on `where` (root only); skips the test when it cannot be."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_a_read_only_store_stops_the_start(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    path = ro / "activity.db"
    if os.geteuid() != 0:
        ro.mkdir()
        shutil.copy(FIXTURE, path)
        path.chmod(0o444)
        result = start_failure(tmp_path, store_config(path))
        ro.chmod(0o755)
    else:  # root writes any file: make the file system read-only instead
        with tmpfs(ro, "1m"):
            shutil.copy(FIXTURE, path)
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            result = start_failure(tmp_path, store_config(path))
    assert_refused(result, path, "not writable")


def test_a_reload_onto_an_unusable_store_is_rejected_and_recording_goes_on(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.db"
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    with llamaswap(tmp_path, store_config(good)) as server:
        assert server.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(server)) == 1, 5.0)
        server.write_config(store_config(bad))
        server.send(signal.SIGHUP)
        assert wait_until_sync(lambda: "config reload rejected" in server.log(), 10.0)
        log = server.log()
        assert f"activity store {bad}: is not a SQLite database" in log
        assert "Traceback" not in log
        assert server.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(server)) == 2, 5.0)


# ---- a full disk while running: recording pauses, serving goes on ---------------------------


@dataclass
class SmallDisk:
    """Where the store lives, and how the disk gets full: a tiny tmpfs filled up (root), or
    a file-size limit on the llamaswap process (`preexec`) that the store's WAL runs into."""

    dir: Path
    preexec: Callable[[], None] | None
    filler: Path | None

    def fill(self) -> None:
        if self.filler is None:
            return  # the file-size limit fills it as requests are recorded
        with contextlib.suppress(OSError), self.filler.open("wb", buffering=0) as out:
            while True:  # until ENOSPC
                out.write(b"\0" * 4096)

    def free(self) -> bool:
        if self.filler is None:
            return False
        self.filler.unlink()
        return True


def _limit_file_size() -> None:
    # 96 KiB: more than the new store file (24 KiB) and its shared-memory file (32 KiB), less
    # than a WAL of a few dozen recorded requests. Python ignores SIGXFSZ: writes get EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    where = tmp_path / "disk"
    if request.param == "file-size-limit":
        where.mkdir()
        yield SmallDisk(where, _limit_file_size, None)
        return
    with tmpfs(where, "512k"):
        yield SmallDisk(where, None, where / "filler")


def test_a_full_disk_pauses_recording_with_one_warning_and_serving_goes_on(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    path = small_disk.dir / "activity.db"
    server = LlamaswapProcess(tmp_path, store_config(path), preexec=small_disk.preexec)
    server.start()
    try:
        assert server.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(server)) == 1, 5.0)
        small_disk.fill()
        sent = 0

        def paused() -> bool:
            nonlocal sent
            reply = server.chat("m1")
            assert reply.status == 200, reply.text  # every request is still answered
            sent += 1
            return "recording paused" in server.log()

        assert wait_until_sync(paused, 30.0), server.log()
        for _ in range(5):  # more requests while paused: served, no more warnings
            assert server.chat("m1").status == 200
        log = server.log()
        assert log.count("recording paused") == 1, log
        assert f"activity store {path}:" in log and "WARNING" in log
        assert "Traceback" not in log, log
        recorded = len(activity(server))
        assert 1 <= recorded < 1 + sent + 5
        if small_disk.free():
            # After the retry interval (10 s) a write succeeds and recording resumes.
            assert wait_until_sync(
                lambda: server.chat("m1").status == 200 and "recording resumed" in server.log(),
                25.0,
            ), server.log()
            assert len(activity(server)) > recorded
        server.stop()
    finally:
        server.kill_hard()


# ---- the same file with llama-swap itself (optional: needs its Go build) -------------------


def llama_swap_binary() -> Path:
    """llama-swap [H] (0bdb3720 or newer): $LLAMA_SWAP_BIN, else ../shared/anchors/llama-swap
    beside the repository (see that directory's README). Skips the test when absent."""
    given = os.environ.get("LLAMA_SWAP_BIN")
    binary = (
        Path(given) if given else Path(__file__).parents[2].parent / "shared/anchors/llama-swap"
    )
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.skip(f"llama-swap's Go build not found at {binary} (set LLAMA_SWAP_BIN)")
    return binary


@contextlib.contextmanager
def llama_swap(binary: Path, tmp_path: Path, store: Path) -> Iterator[LlamaswapProcess]:
    """llama-swap serving the fake model on `store`, stopped with SIGTERM after the block.

    It reuses LlamaswapProcess's client half; the process is started here."""
    server = LlamaswapProcess(tmp_path / "go", store_config(store))
    server.tmp_path.mkdir()
    server.start_port = free_port_block(4)
    server.port = free_port()
    server.write_config(server.config)
    argv = [str(binary), "-config", str(server.config_path), "-listen", server.base[7:]]
    with server.log_path.open("wb") as log:
        server.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise AssertionError(f"llama-swap exited {server.proc.returncode}:\n{server.log()}")
        try:
            return server.call("GET", "/health", timeout=1).status == 200
        except OSError:
            return False

    try:
        assert wait_until_sync(healthy, STORE_START_TIMEOUT), server.log()
        yield server
        server.send(signal.SIGTERM)
        server.proc.wait(10)
    finally:
        server.kill_hard()


def test_llama_swap_starts_on_and_reads_a_file_llamaswap_wrote(tmp_path: Path) -> None:
    binary = llama_swap_binary()
    path = tmp_path / "shared.db"
    with llamaswap(tmp_path, store_config(path)) as server:
        assert server.chat("m1").status == 200
        failed = server.call(
            "POST", "/v1/chat/completions?fail=500", {"model": "m1", "messages": []}
        )
        assert failed.status == 500
        assert wait_until_sync(lambda: len(activity(server)) == 2, 5.0)
    with llama_swap(binary, tmp_path, path) as go:
        rows = activity(go)
        assert [(r["id"], r["model"], r["resp_status_code"]) for r in rows] == [
            (1, "m1", 200),
            (2, "m1", 500),
        ]
        assert rows[1]["error_msg"] == "fake failure 500"
        assert go.chat("m1").status == 200
        assert wait_until_sync(lambda: len(activity(go)) == 3, 5.0)
    with llamaswap(tmp_path, store_config(path)) as server:  # and back: llama-swap's row too
        rows = activity(server)
        assert [r["id"] for r in rows] == [1, 2, 3]
        assert rows[2]["model"] == "m1" and rows[2]["tokens"]["input_tokens"] == 25


def test_llamaswap_and_llama_swap_record_into_one_file_at_once(tmp_path: Path) -> None:
    binary = llama_swap_binary()
    path = tmp_path / "shared.db"
    with llamaswap(tmp_path, store_config(path)) as ours, llama_swap(binary, tmp_path, path) as go:
        for server in (ours, go, ours, go):
            assert server.chat("m1").status == 200
        # Each sees all four rows, numbered by SQLite: none was overwritten.
        assert wait_until_sync(lambda: len(activity(ours)) == len(activity(go)) == 4, 5.0)
        assert [r["id"] for r in activity(ours)] == [r["id"] for r in activity(go)] == [1, 2, 3, 4]
