"""Command building (spec §3.1): pure."""

from __future__ import annotations

import pytest

from llamaswap.errors import CommandError
from llamaswap.supervisor.command import build_argv, build_env, substitute_pid


def test_spec_example() -> None:
    cmd = (
        "python model1.py \\\n"
        '  -a "double quotes" \\\n'
        "  --arg2 'single quotes' \\\n"
        "  # comment\n"
        "  --arg4 '\"string in string\"' \\\n"
        "  -c \"'single quoted'\"\n"
    )
    assert build_argv(cmd) == [
        "python",
        "model1.py",
        "-a",
        "double quotes",
        "--arg2",
        "single quotes",
        "--arg4",
        '"string in string"',
        "-c",
        "'single quoted'",
    ]


def test_no_shell_interpretation() -> None:
    assert build_argv("prog a|b > out $HOME *.gguf a#b") == [
        "prog",
        "a|b",
        ">",
        "out",
        "$HOME",
        "*.gguf",
        "a#b",
    ]


def test_newlines_are_whitespace_and_escapes() -> None:
    assert build_argv("prog\n  --x 1\n--y\\ z") == ["prog", "--x", "1", "--y z"]


@pytest.mark.parametrize("cmd", ["", "   ", "# only a comment\n  # another", "\\"])
def test_empty_command(cmd: str) -> None:
    with pytest.raises(CommandError, match=r"^empty command$"):
        build_argv(cmd)


def test_unbalanced_quote() -> None:
    with pytest.raises(CommandError):
        build_argv('prog "unterminated')


def test_build_env_appends_and_later_wins() -> None:
    base = {"PATH": "/bin", "A": "base"}
    env = build_env(["A=1", "B=x=y", "A=2", "EMPTY="], base)
    assert env == {"PATH": "/bin", "A": "2", "B": "x=y", "EMPTY": ""}
    assert base == {"PATH": "/bin", "A": "base"}  # not mutated


def test_substitute_pid() -> None:
    assert substitute_pid("kill -TERM ${PID}; echo ${PID}", 42) == "kill -TERM 42; echo 42"
