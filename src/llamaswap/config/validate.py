"""Semantic validation of a typed `Config`, and the normalisations that can fail. Pure.

`validate` returns every problem found (never stops at the first) and, on the way, finishes the
config: setParamsByID keys become aliases, preload names become model IDs, fifo priorities are
keyed by model ID, and the matrix is compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from llamaswap.config.durations import parse_duration
from llamaswap.config.matrix import compile_matrix
from llamaswap.config.model import Config, MatrixConfig
from llamaswap.config.names import validate_names
from llamaswap.config.normalise import Origins
from llamaswap.config.resources import resource_problems
from llamaswap.errors import ConfigError, ConfigProblem

MODALITIES = ("text", "audio", "image")
MIN_PERFORMANCE_EVERY = 5.0


def validate(config: Config, origins: Origins | None = None) -> list[ConfigProblem]:
    """Every semantic problem in `config`; finishes the normalisations on the way."""
    problems = [*_globals(config), *_models(config), *_aliases(config)]
    config._alias_map = None  # setParamsByID keys were just added as aliases
    problems += [
        *_routing(config, origins or Origins()),
        *validate_names(config),
        *_misc(config),
        *resource_problems(config),
    ]
    _preload(config)
    return problems


def url_problem(url: str) -> str | None:
    """Why `url` is not a usable http(s) base URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return str(exc)
    if not parts.scheme or not parts.netloc:
        return "missing scheme or host"
    return None


def _globals(config: Config) -> Iterator[ConfigProblem]:
    if config.global_ttl < 0:
        yield ConfigProblem("globalTTL", "globalTTL must be >= 0")
    if config.unload_timeout < 0:
        yield ConfigProblem("unloadTimeout", "unloadTimeout must be >= 0")
    for i, key in enumerate(config.api_keys):
        if not key.strip():
            yield ConfigProblem(f"apiKeys[{i}]", "empty api key found in apiKeys")
        elif " " in key:
            yield ConfigProblem(f"apiKeys[{i}]", "api key cannot contain spaces")


def _models(config: Config) -> Iterator[ConfigProblem]:
    for model_id in sorted(config.models):
        m = config.models[model_id]
        where = f"models.{model_id}"
        if m.ttl < 0:
            yield ConfigProblem(f"{where}.ttl", f"model {model_id}: invalid TTL value {m.ttl}")
        if m.unload_timeout < 0:
            yield ConfigProblem(
                f"{where}.unloadTimeout", f"model {model_id}: unloadTimeout must be >= 0"
            )
        # A proxy still holding `${...}` has already been reported by the macro pass; an
        # empty one (an empty model body) parses in Go too, and fails only at start.
        if m.proxy and "${" not in m.proxy and (why := url_problem(m.proxy)) is not None:
            yield ConfigProblem(f"{where}.proxy", f"model {model_id}: invalid proxy URL: {why}")
        caps = m.capabilities
        for key, values in (("in", caps.inputs), ("out", caps.out)):
            for value in values:
                if value not in MODALITIES and "${" not in value:
                    yield ConfigProblem(
                        f"{where}.capabilities.{key}",
                        f'model {model_id}: capabilities.{key}: invalid modality "{value}", '
                        f"must be one of: {', '.join(MODALITIES)}",
                    )
        if caps.context < 0:
            yield ConfigProblem(
                f"{where}.capabilities.context",
                f"model {model_id}: capabilities.context: must be >= 0",
            )


def _aliases(config: Config) -> Iterator[ConfigProblem]:
    """Explicit aliases are unique; setParamsByID keys are then registered as aliases."""
    owner: dict[str, str] = {}
    for model_id in sorted(config.models):
        for alias in config.models[model_id].aliases:
            if alias in owner:
                yield ConfigProblem(
                    f"models.{model_id}.aliases",
                    f"duplicate alias {alias} found in model: {model_id}",
                )
            else:
                owner[alias] = model_id
    for model_id in sorted(config.models):
        m = config.models[model_id]
        where = f"models.{model_id}.filters.setParamsByID"
        for key in m.filters.set_params_by_id:
            if key == model_id:
                continue
            if key in config.models:
                yield ConfigProblem(
                    where,
                    f"model {model_id} filters.setParamsByID: key '{key}' conflicts with an "
                    "existing model ID",
                )
            elif owner.get(key, model_id) != model_id:
                yield ConfigProblem(
                    where,
                    f"duplicate alias '{key}' in model {model_id} filters.setParamsByID, "
                    f"already used by model {owner[key]}",
                )
            else:
                owner[key] = model_id
                if key not in m.aliases:
                    m.aliases.append(key)


def _routing(config: Config, origins: Origins) -> Iterator[ConfigProblem]:
    settings = config.routing.router.settings
    if config.uses_matrix():
        try:
            config._matrix = compile_matrix(
                settings.matrix or MatrixConfig(), config.models, origins.matrix
            )
        except ConfigError as exc:
            yield from exc.problems
    else:
        seen: dict[str, str] = {}
        for name, group in settings.groups.items():
            where = f"{origins.groups}.{name}.members"
            members: list[str] = []
            for written in group.members:
                # A member may be written as an alias (llama-swap refuses it when starting).
                m = config.resolve_model(written) or written
                if m in members:
                    yield ConfigProblem(
                        where, f"duplicate model member {written} found in group: {name}"
                    )
                elif m in seen:
                    yield ConfigProblem(
                        where,
                        f"model member {written} is used in multiple groups: {seen[m]} and {name}",
                    )
                elif m not in config.models:
                    yield ConfigProblem(where, f'group {name}: no model config for "{m}"')
                seen.setdefault(m, name)
                members.append(m)
            group.members = members
    fifo = config.routing.scheduler.settings.fifo
    priority: dict[str, int] = {}
    for name, value in fifo.priority.items():
        model_id = config.resolve_model(name)
        if model_id is None:
            yield ConfigProblem(
                "routing.scheduler.settings.fifo.priority",
                f'routing.scheduler.settings.fifo.priority references unknown model "{name}"',
            )
        else:
            # Keyed by the real ID so a priority written for an alias takes effect too.
            priority.setdefault(model_id, value)
    fifo.priority = priority


def _preload(config: Config) -> None:
    """Preload names trimmed, empties and unknown names dropped, aliases resolved, deduped."""
    ids = (config.resolve_model(n.strip()) for n in config.hooks.on_startup.preload)
    config.hooks.on_startup.preload = list(dict.fromkeys(i for i in ids if i is not None))


def _misc(config: Config) -> Iterator[ConfigProblem]:
    for pattern in config.upstream.ignore_paths:
        try:
            re.compile(pattern)
        except re.error as exc:
            yield ConfigProblem(
                "upstream.ignorePaths", f'invalid regular expression "{pattern}": {exc}'
            )
    every = config.performance.every
    seconds = parse_duration(every)
    if seconds is None:
        yield ConfigProblem("performance.every", f'performance: invalid duration "{every}"')
    elif seconds < MIN_PERFORMANCE_EVERY:
        yield ConfigProblem(
            "performance.every", f"performance: every must be at least 5s, got {every}"
        )
    if config.store.path is not None and not config.store.path.strip():
        yield ConfigProblem("store.path", "store.path must not be empty")
