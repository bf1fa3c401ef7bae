"""Merge several parsed config sources into one tree (the `-config` file, then `-config-dir`). Pure.

Mappings merge recursively (first source's key order, then new keys), sequences concatenate,
equal scalars agree, null yields to a value. A differing scalar or a mapping-vs-list clash is
a conflict. In identity maps (models, groups, peers, ...) a key may be defined only once.
"""

from __future__ import annotations

from typing import Any

from llamaswap.errors import ConfigError, ConfigProblem

# Dotted path of an identity map -> the word used in the error.
IDENTITY_MAPS = {
    "models": "model",
    "groups": "group",
    "profiles": "profile",
    "selectors": "selector",
    "peers": "peer",
    "matrix": "matrix",
    "routing.router.settings.groups": "group",
    "routing.router.settings.matrix": "matrix",
}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "sequence"
    return "scalar"


def _merge(old: Any, new: Any, path: str, source: str, problems: list[ConfigProblem]) -> Any:
    if old is None:
        return new
    if new is None:
        return old
    if _kind(old) != _kind(new):
        problems.append(
            ConfigProblem(
                path,
                f'conflict at "{path}": {source} sets a {_kind(new)} where a previous source '
                f"set a {_kind(old)}",
            )
        )
        return old
    if isinstance(old, list):
        return [*old, *new]
    if isinstance(old, dict):
        merged = dict(old)
        identity = IDENTITY_MAPS.get(path)
        for key, value in new.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in merged:
                merged[key] = value
            elif identity is not None:
                problems.append(
                    ConfigProblem(
                        child,
                        f'duplicate {identity} "{key}" found in {source} '
                        "(already defined in another config source)",
                    )
                )
            else:
                merged[key] = _merge(merged[key], value, child, source, problems)
        return merged
    if type(old) is not type(new) or old != new:
        problems.append(
            ConfigProblem(
                path,
                f'conflict at "{path}": {source} sets a different value than a previous source',
            )
        )
    return old


def merge_sources(sources: list[tuple[str, Any]]) -> dict[str, Any]:
    """Merge (source name, parsed tree) pairs in order; raises ConfigError naming each clash."""
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    for source, tree in sources:
        if tree is None:
            continue  # an empty file
        if not isinstance(tree, dict):
            problems.append(ConfigProblem("", f"{source}: config must be a YAML mapping"))
            continue
        merged = _merge(merged, tree, "", source, problems)
    if problems:
        raise ConfigError(problems, ", ".join(name for name, _ in sources))
    return merged
