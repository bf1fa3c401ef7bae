"""The macro engine: `${env.NAME}`, declared macros, `${MODEL_ID}`, `${PORT}`, `${PID}`,
`${GPU}`. Pure.

Declared macros form an ordered list that is substituted from last to first, so a macro may
use any macro declared before it (a reference to a later one survives and is reported as
unknown). A value that is exactly `${NAME}` takes the macro's type (int, float, bool, str);
anywhere else the value is formatted as Go's `%v` would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml

from llamaswap.config.model import Scalar
from llamaswap.config.yaml12 import go_float, load_first
from llamaswap.errors import ConfigError, ConfigProblem

ENV_MACRO = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
ANY_MACRO = re.compile(r"\$\{([^${}\s]+)\}")
MACRO_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
MAX_MACRO_NAME = 63
RESERVED = ("PORT", "MODEL_ID", "PID", "GPU")
# Macros filled when the process starts, in these model fields only (else: unknown macro).
RUNTIME = {"PID": ("cmdStop",), "GPU": ("cmd", "cmdStop", "env")}

MacroList = list[tuple[str, Scalar]]


def _walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree (keys included) with the dotted path where it sits."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            child = f"{path}.{k}" if path else str(k)
            if isinstance(k, str):
                yield child, k
            yield from _walk(v, child)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def substitute_env(
    text: str,
    environ: Mapping[str, str],
    source: str = "",
    parse: Callable[[str], Any] = load_first,
) -> str:
    """Replace `${env.NAME}` in the raw YAML text, ignoring occurrences inside YAML comments.

    Values are escaped for double-quoted YAML (backslash and quote); a value with a newline,
    carriage return or NUL is refused, as is an unset variable. `parse` reads the text to
    find the macros outside comments (the loader passes its own, which refuses documents
    that are unsafe to walk); text it cannot parse is searched as it is.
    """
    if ENV_MACRO.search(text) is None:
        return text
    try:
        # Comments vanish when parsing, so parsing tells which macros are real.
        found = [(p, m) for p, s in _walk(parse(text), "") for m in ENV_MACRO.findall(s)]
    except yaml.YAMLError:
        found = [("", m) for m in ENV_MACRO.findall(text)]
    problems: list[ConfigProblem] = []
    values: dict[str, str] = {}
    seen: set[str] = set()
    for path, name in found:
        if name in seen:
            continue
        seen.add(name)
        # Without a YAML path (text that does not parse, or a bare scalar), name the line.
        line = "" if path else f" (line {_line_of(text, f'${{env.{name}}}')})"
        value = environ.get(name)
        if value is None:
            problems.append(ConfigProblem(path, f"environment variable '{name}' is not set{line}"))
        elif any(c in value for c in "\n\r\0"):
            problems.append(
                ConfigProblem(
                    path,
                    f"environment variable '{name}' contains newlines or null bytes which are "
                    f"not allowed in YAML substitution{line}",
                )
            )
        else:
            values[name] = value.replace("\\", "\\\\").replace('"', '\\"')
    if problems:
        raise ConfigError(problems, source)
    for name, value in values.items():
        text = text.replace(f"${{env.{name}}}", value)
    return text


def _line_of(text: str, token: str) -> int:
    """1-based line of the first `token` in `text`."""
    return text.count("\n", 0, max(text.find(token), 0)) + 1


def strip_comment_lines(command: str) -> str:
    """Drop full-line `#` comments from a command; trailing `# ...` stays part of the line."""
    return "\n".join(ln for ln in command.split("\n") if not ln.strip().startswith("#"))


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def validate_macros(raw: Any, path: str, prefix: str = "") -> tuple[MacroList, list[ConfigProblem]]:
    """Check a `macros:` block; returns the usable (name, value) list in order and the problems."""
    if raw is None:
        return [], []
    if not isinstance(raw, dict):
        return [], [ConfigProblem(path, f"{prefix}macros must be a mapping")]
    macros: MacroList = []
    problems: list[ConfigProblem] = []
    for key, value in raw.items():
        name = str(key)
        where = f"{path}.{name}"

        def bad(message: str, where: str = where) -> None:
            problems.append(ConfigProblem(where, prefix + message))

        if len(name) > MAX_MACRO_NAME:
            bad(f"macro name '{name}' exceeds maximum length of {MAX_MACRO_NAME} characters")
        elif not MACRO_NAME.match(name):
            bad(f"macro name '{name}' contains invalid characters, must match ^[a-zA-Z0-9_-]+$")
        elif name in RESERVED:
            bad(f"macro name '{name}' is reserved")
        elif not isinstance(value, str | int | float | bool):
            bad(
                f"macro '{name}' has invalid type {_go_type(value)}, must be a scalar type "
                "(string, int, float, or bool)"
            )
        elif isinstance(value, str) and f"${{{name}}}" in value:
            bad(f"macro '{name}' contains self-reference")
        else:
            macros.append((name, value))
    return macros, problems


def merge_macros(model_id: str, globals_: MacroList, local: MacroList) -> MacroList:
    """`[MODEL_ID, globals...]` with model macros overriding a global in place, else appended."""
    merged: MacroList = [("MODEL_ID", model_id), *globals_]
    index = {name: i for i, (name, _) in enumerate(merged)}
    for name, value in local:
        if name in index:
            merged[index[name]] = (name, value)
        else:
            index[name] = len(merged)
            merged.append((name, value))
    return merged


def format_value(value: Scalar) -> str:
    """A macro value as text, the way Go's `%v` prints it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def expand_string(text: str, macros: MacroList) -> Any:
    """Substitute `macros` into one string, last declared first; `${X}` alone keeps X's type."""
    for name, value in reversed(macros):
        token = f"${{{name}}}"
        if token not in text:
            continue
        if text == token and not isinstance(value, str):
            return value
        text = text.replace(token, format_value(value))
    return text


def expand(node: Any, macros: MacroList) -> Any:
    """Substitute `macros` into every string value of a YAML tree (map keys are left alone)."""
    if isinstance(node, str):
        return expand_string(node, macros)
    if isinstance(node, dict):
        return {k: expand(v, macros) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v, macros) for v in node]
    return node


def leftover(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, macro name) for every `${NAME}` still present in the string values of a tree."""
    for where, text in _walk_values(node, path):
        for name in ANY_MACRO.findall(text):
            yield where, name


def _walk_values(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_values(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_values(v, f"{path}[{i}]")
