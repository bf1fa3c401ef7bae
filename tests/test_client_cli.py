"""The pure parts of `client_cli`: the ps table, durations, error messages."""

from __future__ import annotations

from typing import Any

import pytest

from llamaswap.client_cli import duration, error_message, ps_table


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        ("5", "-"),
        (True, "-"),
        (0, "0s"),
        (59.4, "59s"),
        (61, "1m01s"),
        (7260, "2h01m"),
    ],
)
def test_duration(seconds: object, text: str) -> None:
    assert duration(seconds) == text


def test_ps_table_rows() -> None:
    entries: list[dict[str, Any]] = [
        {"model": "busy", "state": "ready", "pid": 10, "uptimeS": 3, "ttlLeftS": None,
         "inFlight": 2, "queued": 1, "loadTimeS": 1.25},
        {"model": "kept", "state": "ready", "pid": 11, "uptimeS": 90, "ttlLeftS": None,
         "inFlight": 0, "queued": 0, "loadTimeS": None},
        {"model": "crashy", "state": "stopped", "pid": None, "uptimeS": None, "ttlLeftS": None,
         "inFlight": 0, "queued": 0, "loadTimeS": None,
         "backoff": {"failures": 3, "retryInS": 12.4, "lastError": "exit 1"}},
    ]  # fmt: skip
    lines = ps_table(entries).splitlines()
    # Columns line up: each row's state starts where the STATE header does.
    assert {lines[0].index("STATE")} == {line.index("ready") for line in lines[1:3]}
    rows = [[c.strip() for c in line.split("   ") if c.strip()] for line in lines[1:]]
    assert rows == [
        ["busy", "ready", "10", "3s", "-", "2", "1", "1.2s"],
        ["kept", "ready", "11", "1m30s", "forever", "0", "0", "-"],
        ["crashy", "backoff (retry in 12s)", "-", "-", "-", "0", "0", "-"],
    ]


def test_ps_table_names_each_rows_node_when_the_server_is_a_cluster() -> None:
    entries: list[dict[str, Any]] = [
        {"model": "a", "state": "ready", "pid": 10, "inFlight": 0, "node": "box-a"},
        {"model": "a", "state": "starting", "pid": 11, "node": "box-b", "nodeDraining": True},
    ]
    lines = ps_table(entries).splitlines()
    assert lines[0].split()[:2] == ["NODE", "MODEL"]
    rows = [[c.strip() for c in line.split("   ") if c.strip()] for line in lines[1:]]
    assert [r[:3] for r in rows] == [
        ["box-a", "a", "ready"],
        ["box-b (draining)", "a", "starting"],
    ]
    assert "NODE" not in ps_table([{"model": "a", "state": "ready"}])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"model x not found","type":"not_found"}}', "model x not found"),
        (b'{"error":"bad keep_alive"}', "bad keep_alive"),
        (b"plain text\nsecond line", "plain text"),
        (b"", "(no message)"),
    ],
)
def test_error_message_shapes(body: bytes, message: str) -> None:
    assert error_message(body) == message
