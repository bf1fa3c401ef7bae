"""Raw-tree fixes before the typed decode: legacy spellings and enum checks with llama-swap's words.

Legacy top-level `groups:`/`matrix:` move into `routing.router.settings`; values the typed
decode would refuse with a generic message (`logToStdout`, `routing.*.use`, legacy list
profiles) are reported here with the spec's message and removed so they are not reported twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamaswap.errors import ConfigProblem

LOG_TARGETS = ("proxy", "upstream", "both", "none")


@dataclass(frozen=True)
class Origins:
    """Where the router settings were written, so errors name the user's own YAML path."""

    groups: str = "routing.router.settings.groups"
    matrix: str = "routing.router.settings.matrix"


def _mapping(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    """`parent[key]` as a dict, creating it when absent/null; None when it is something else."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    return value if isinstance(value, dict) else None


def normalise_raw(tree: dict[str, Any], problems: list[ConfigProblem]) -> Origins:
    """Normalise `tree` in place, appending problems; returns where groups/matrix came from."""
    log = tree.get("logToStdout")
    if log is not None and log not in LOG_TARGETS:
        problems.append(
            ConfigProblem("logToStdout", "logToStdout must be one of: proxy, upstream, both, none")
        )
        del tree["logToStdout"]
    _legacy_profiles(tree, problems)
    origins = _routing(tree, problems)
    routing = tree.get("routing")
    if isinstance(routing, dict):
        for part, valid in (("router", ("group", "matrix")), ("scheduler", ("fifo",))):
            block = routing.get(part)
            if not isinstance(block, dict):
                continue
            use = block.get("use")
            if use in (None, ""):
                block.pop("use", None)
            elif use not in valid:
                problems.append(
                    ConfigProblem(
                        f"routing.{part}.use",
                        f'unknown {part} "{use}" (valid: {", ".join(valid)})',
                    )
                )
                del block["use"]
        router = routing.get("router")
        if isinstance(router, dict) and router.get("use") == "matrix":
            settings = router.get("settings")
            if not isinstance(settings, dict) or settings.get("matrix") is None:
                problems.append(
                    ConfigProblem(
                        "routing.router.use",
                        "routing.router.use is 'matrix' but routing.router.settings.matrix "
                        "is not set",
                    )
                )
                router["use"] = "group"
    return origins


def _routing(tree: dict[str, Any], problems: list[ConfigProblem]) -> Origins:
    groups = tree.pop("groups", None)
    matrix = tree.pop("matrix", None)
    if groups is None and matrix is None:
        return Origins()
    routing = _mapping(tree, "routing")
    router = routing.get("router") if routing is not None else None
    if routing is None or router:
        problems.append(
            ConfigProblem(
                "routing.router",
                "config uses both the legacy top-level 'matrix'/'groups' keys and the new "
                "'routing.router' block; move them under routing.router.settings",
            )
        )
        return Origins()
    if groups is not None and matrix is not None:
        problems.append(ConfigProblem("matrix", "config cannot use both 'groups' and 'matrix'"))
        return Origins()
    if matrix is not None:
        routing["router"] = {"use": "matrix", "settings": {"matrix": matrix}}
    else:
        routing["router"] = {"use": "group", "settings": {"groups": groups}}
    return Origins(groups="groups", matrix="matrix")


def _legacy_profiles(tree: dict[str, Any], problems: list[ConfigProblem]) -> None:
    profiles = tree.get("profiles")
    if profiles is None:
        return
    message = (
        "profile must be a mapping with description and pins; "
        "the legacy list syntax is no longer supported"
    )
    if not isinstance(profiles, dict):
        problems.append(ConfigProblem("profiles", message))
        del tree["profiles"]
        return
    for name in [n for n, p in profiles.items() if isinstance(p, list)]:
        problems.append(ConfigProblem(f"profiles.{name}", message))
        del profiles[name]
