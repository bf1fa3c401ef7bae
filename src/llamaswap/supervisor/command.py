"""Turning a model's `cmd` string into an argv and an environment (spec §3.1); pure.

No shell is ever involved: `|`, `>`, `$VAR` and globs reach the program verbatim.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping

from llamaswap.errors import CommandError

__all__ = ["build_argv", "build_env", "substitute_pid"]


def _join_lines(cmd: str) -> str:
    """Drop full-line `#` comments and join lines ending in `\\` (the backslash becomes a space)."""
    kept: list[str] = []
    for line in cmd.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            # Go's llama-swap replaces the trailing backslash with a space; the newline that
            # follows is whitespace to the word splitter anyway.
            kept.append(stripped[:-1] + " ")
        else:
            kept.append(line)
    return "\n".join(kept)


def build_argv(cmd: str) -> list[str]:
    """Return the argument vector for `cmd`: comments dropped, lines joined, POSIX-split.

    Raises `CommandError("empty command")` when nothing is left, and `CommandError` with the
    splitter's message for unbalanced quotes.
    """
    text = _join_lines(cmd)
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        # shlex's default treats `#` as a comment start mid-line; POSIX words like `a#b` must stay.
        lexer.commenters = ""
        argv = list(lexer)
    except ValueError as exc:
        raise CommandError(f"invalid command: {exc}") from exc
    if not argv:
        raise CommandError("empty command")
    return argv


def build_env(extra: Iterable[str], base: Mapping[str, str]) -> dict[str, str]:
    """Return `base` with each `NAME=value` of `extra` applied in order (later entries win).

    An entry without `=` sets the variable to the empty string, as Go's exec does for it.
    """
    env = dict(base)
    for entry in extra:
        name, _, value = entry.partition("=")
        if name:
            env[name] = value
    return env


def substitute_pid(cmd_stop: str, pid: int) -> str:
    """Replace every `${PID}` in `cmd_stop` with `pid`."""
    return cmd_stop.replace("${PID}", str(pid))
