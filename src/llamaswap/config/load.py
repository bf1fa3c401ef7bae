"""Read a config (one file, or a file plus a directory of files) and turn it into a `Config`.

Pipeline (llama-swap §2.1, [H] revision):

1. `${env.NAME}` replaced in each file's text (not inside YAML comments); files merged.
2. Global `macros` validated; comment lines stripped from every `cmd`/`cmdStop`; a missing
   `proxy` becomes `http://localhost:${PORT}`.
3. Global macros substituted into every top-level value except `models`.
4. Per model, in sorted ID order: model macros validated and merged over the globals, then
   substituted into every field; `${PORT}` allocated from `startPort` to models whose `cmd`
   uses it, then substituted through the whole model.
5. Any `${X}` left is an error (`${PID}` only in `cmdStop`; `${GPU}` in `cmd`, `cmdStop`, `env`).
6. Legacy `groups`/`matrix` normalised into `routing`; typed decode; semantic validation.

Every problem found is collected and raised together as one ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llamaswap.config import macros as mac
from llamaswap.config.lint import unknown_keys, unusable_models
from llamaswap.config.merge import merge_sources
from llamaswap.config.model import Config, ModelConfig
from llamaswap.config.normalise import normalise_raw
from llamaswap.config.validate import validate
from llamaswap.config.yaml12 import load_first
from llamaswap.errors import ConfigError, ConfigProblem

__all__ = ["config_schema", "load_config", "load_config_text", "parse_config_text", "summarize"]

# Model fields whose leftover macros get llama-swap's "found in <model>.<field>" wording.
_NAMED_FIELDS = (
    "cmd",
    "cmdStop",
    "proxy",
    "checkEndpoint",
    "filters.stripParams",
    "name",
    "description",
)
# Bounds on a parsed document (see `tree_problem`); a real config is far inside both.
MAX_TREE_DEPTH = 100
MAX_TREE_VALUES = 200_000
_KNOWN_TOP = {f.alias or n for n, f in Config.model_fields.items()} | {"groups", "matrix"}


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way the config loader does (llama-swap's rules, `yaml12`)."""
    try:
        return load_first(text)
    except RecursionError as exc:  # the pure-Python parser, when libyaml is missing
        raise yaml.YAMLError("document nests too deeply") from exc


_SCALARS = (str, int, float, bool, type(None))


def tree_problem(tree: Any) -> ConfigProblem | None:
    """Why a parsed tree must not be used, or None.

    Anchors make a YAML document a graph, not a tree: an alias inside its own anchor is a
    value containing itself (every recursive walk of it overflows the stack), and aliases of
    aliases multiply the values seen by each walk ("billion laughs": ten lines can stand for
    10**9 values). Go's YAML decoder refuses both; so do we, along with absurd nesting.
    Explicit tags such as `!!binary`, `!!set` or `!!timestamp` make values that are not JSON
    (`metadata` and `setParams` are sent as JSON), so only JSON's kinds of value are allowed.
    """
    count = 0
    stack: list[tuple[Any, str, tuple[int, ...]]] = [(tree, "", ())]
    while stack:
        node, path, ancestors = stack.pop()
        count += 1
        if count > MAX_TREE_VALUES:
            return ConfigProblem(
                path,
                f"document contains excessive aliasing (more than {MAX_TREE_VALUES} values "
                "once anchors are expanded)",
            )
        if isinstance(node, dict):
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
            for (where, _), key in zip(children, node, strict=True):
                if not isinstance(key, _SCALARS):
                    return ConfigProblem(where, f"unsupported mapping key {key!r}")
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        elif isinstance(node, _SCALARS):
            continue
        else:
            return ConfigProblem(
                path,
                f"unsupported value of type {type(node).__name__} (only strings, numbers, "
                "booleans, null, sequences and mappings)",
            )
        if id(node) in ancestors:
            return ConfigProblem(path, "value contains itself (an alias inside its own anchor)")
        if len(ancestors) >= MAX_TREE_DEPTH:
            return ConfigProblem(path, f"nesting deeper than {MAX_TREE_DEPTH} levels")
        inner = (*ancestors, id(node))
        stack += [(value, where, inner) for where, value in reversed(children)]
    return None


def _parse_checked(text: str, source: str) -> Any:
    tree = parse_yaml(text)
    if (problem := tree_problem(tree)) is not None:
        raise ConfigError([problem], source)
    return tree


def load_config(
    path: str | Path | None,
    config_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load the `path` file, then every `*.yml`/`*.yaml` directly in `config_dir` (sorted)."""
    environ = os.environ if env is None else env
    files: list[Path] = [Path(path)] if path is not None else []
    if config_dir is not None:
        folder = Path(config_dir)
        if not folder.is_dir():
            raise ConfigError([ConfigProblem("", f"config dir {folder} is not a directory")])
        found = sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if path is not None and any(p.resolve() == Path(path).resolve() for p in found):
            raise ConfigError(
                [ConfigProblem("", f"config file {path} is also inside config dir {folder}")]
            )
        files += found
    if not files:
        raise ConfigError(
            [ConfigProblem("", "at least one of -config or -config-dir must be provided")]
        )
    sources: list[tuple[str, Any]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([ConfigProblem("", f"cannot read {file}: {exc}")], str(file)) from exc
        sources.append((str(file), _parse(text, str(file), environ)))
    source = ", ".join(name for name, _ in sources)
    tree = sources[0][1] if len(sources) == 1 else merge_sources(sources)
    config = build_config(tree, source)
    _check_store(config, source)
    return config


def load_config_text(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Load a config from YAML text (env macros read from `env`, default the process's)."""
    return build_config(_parse(text, source, os.environ if env is None else env), source)


def parse_config_text(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Any:
    """The raw tree of a config's YAML text, env macros substituted, for `build_config`
    after a caller has edited it (a cluster node keeps only its own models)."""
    return _parse(text, source, os.environ if env is None else env)


def _parse(text: str, source: str, environ: Mapping[str, str]) -> Any:
    text = mac.substitute_env(text, environ, source, lambda t: _parse_checked(t, source))
    try:
        return _parse_checked(text, source)
    except yaml.YAMLError as exc:
        # PyYAML names its input `<unicode string>`; name the file instead.
        message = str(exc).replace("<unicode string>", source)
        raise ConfigError([ConfigProblem("", message)], source) from exc


def build_config(tree: Any, source: str = "") -> Config:
    """Run the pipeline on a parsed YAML tree (env macros already substituted)."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError([ConfigProblem("", "config must be a YAML mapping")], source)
    warnings = unknown_keys(tree)
    _empty_model_bodies(tree)
    problems = _apply_macros(tree)
    unusable = unusable_models(tree.get("models"))
    origins = normalise_raw(tree, problems)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        problems += [ConfigProblem(_loc(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(problems + unusable, source, warnings) from exc
    problems += validate(config, origins)
    if problems:
        # Every problem at once: a model that can never start is worth fixing too.
        raise ConfigError(problems + unusable, source, warnings)
    config._warnings = warnings
    config._unusable = unusable
    return config


def _empty_model_bodies(tree: dict[str, Any]) -> None:
    """A model whose body is empty (every line commented out) loads as an empty model that
    fails only when started, as in llama-swap: no cmd, and no default proxy (whose `${PORT}`
    would otherwise be an error, since there is no cmd to use it)."""
    models = tree.get("models")
    if isinstance(models, dict):
        for model_id, body in models.items():
            if body is None:
                models[model_id] = {"proxy": ""}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _apply_macros(tree: dict[str, Any]) -> list[ConfigProblem]:
    """Steps 2-5 of the pipeline, in place on the raw tree."""
    globals_, problems = mac.validate_macros(tree.pop("macros", None), "macros")
    models = tree.get("models")
    if not isinstance(models, dict):
        models = {}
    for raw in models.values():
        if isinstance(raw, dict):
            for key in ("cmd", "cmdStop"):
                if isinstance(raw.get(key), str):
                    raw[key] = mac.strip_comment_lines(raw[key])
            if raw.get("proxy") is None:
                raw["proxy"] = ModelConfig.model_fields["proxy"].default
    for key in list(tree):
        if key != "models":
            tree[key] = mac.expand(tree[key], globals_)
    start = tree.get("startPort", Config.model_fields["start_port"].default)
    if isinstance(start, int) and not isinstance(start, bool) and start < 1:
        problems.append(ConfigProblem("startPort", "startPort must be greater than 1"))
    next_port = start if isinstance(start, int) else Config.model_fields["start_port"].default
    for model_id in sorted(models, key=str):
        raw = models[model_id]
        if not isinstance(raw, dict):
            continue
        where = f"models.{model_id}"
        local, bad = mac.validate_macros(
            raw.pop("macros", None), f"{where}.macros", f"model {model_id}: "
        )
        problems += bad
        problems += _expand_model(model_id, raw, mac.merge_macros(str(model_id), globals_, local))
        cmd, proxy = raw.get("cmd"), raw.get("proxy")
        if isinstance(cmd, str) and "${PORT}" in cmd:
            problems += _expand_model(model_id, raw, [("PORT", next_port)])
            next_port += 1
        elif isinstance(proxy, str) and "${PORT}" in proxy:
            problems.append(
                ConfigProblem(
                    f"{where}.proxy",
                    f"model {model_id}: proxy uses ${{PORT}} but cmd does not - ${{PORT}} is only "
                    "available when used in cmd",
                )
            )
            continue  # the leftover ${PORT} would only repeat this
        problems += _leftover_in_model(str(model_id), raw)
    for key, value in tree.items():
        if key in _KNOWN_TOP and key != "models":
            problems += [
                ConfigProblem(path, f"unknown macro '${{{name}}}'")
                for path, name in dict.fromkeys(mac.leftover(value, key))
            ]
    tree["macros"] = dict(globals_)
    return problems


def _by_id(raw: dict[str, Any]) -> dict[Any, Any] | None:
    filters = raw.get("filters")
    by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
    return by_id if isinstance(by_id, dict) else None


def _expand_model(model_id: Any, raw: dict[str, Any], macros: mac.MacroList) -> list[ConfigProblem]:
    """Substitute into every field of one model; setParamsByID keys are expanded too."""
    problems: list[ConfigProblem] = []
    by_id = _by_id(raw)
    for key, value in mac.expand(raw, macros).items():
        raw[key] = value
    if by_id is not None:
        keys: dict[str, Any] = {}
        origin: dict[str, Any] = {}
        for key, value in by_id.items():
            new = mac.expand_string(str(key), macros)
            new = new if isinstance(new, str) else mac.format_value(new)
            if new in keys:
                problems.append(
                    ConfigProblem(
                        f"models.{model_id}.filters.setParamsByID",
                        f'model {model_id} filters.setParamsByID: keys "{origin[new]}" and '
                        f'"{key}" resolve to the same value',
                    )
                )
                continue
            keys[new], origin[new] = mac.expand(value, macros), key
        raw["filters"]["setParamsByID"] = keys
    return problems


def _leftover_in_model(model_id: str, raw: dict[str, Any]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for path, name in dict.fromkeys(mac.leftover(raw, "")):
        field = path.split("[")[0]
        top = field.split(".")[0]
        if field in mac.RUNTIME.get(name, ()):
            continue
        if name.startswith("env."):
            message = f"environment variable '{name[4:]}' is not set"
        elif field in _NAMED_FIELDS and name in ("PORT", "MODEL_ID"):
            message = f"macro '${{{name}}}' should have been substituted in {model_id}.{field}"
        elif field in _NAMED_FIELDS:
            message = f"unknown macro '${{{name}}}' found in {model_id}.{field}"
        elif top in ("metadata", "capabilities"):
            message = f"model {model_id} {top}: unknown macro '${{{name}}}'"
        else:
            message = f"model {model_id} {path}: unknown macro '${{{name}}}'"
        problems.append(ConfigProblem(f"models.{model_id}.{path}", message))
    by_id = _by_id(raw) or {}
    for key in by_id:
        for name in mac.ANY_MACRO.findall(str(key)):
            problems.append(
                ConfigProblem(
                    f"models.{model_id}.filters.setParamsByID",
                    f"unknown macro '${{{name}}}' found in model {model_id} "
                    "filters.setParamsByID key",
                )
            )
    return problems


def _check_store(config: Config, source: str) -> None:
    """`store.path` must name a writable file (or a file that can be created)."""
    path = config.store.path
    if path is None or not path:
        return  # empty is reported by validation
    target = Path(path)
    message = ""
    if target.is_dir():
        message = f"{path} is a directory, not a file"
    elif target.exists() and not os.access(target, os.W_OK):
        message = f"{path} is not writable"
    elif not target.exists() and not (target.parent.is_dir() and os.access(target.parent, os.W_OK)):
        message = f"directory {target.parent} is not writable"
    if message:
        raise ConfigError([ConfigProblem("store.path", message)], source)


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file (YAML spellings), for editors: see config/schema.py."""
    from llamaswap.config.schema import editor_schema  # noqa: PLC0415 - only for `schema`

    return editor_schema()


def summarize(config: Config) -> str:
    """A short human description of a loaded config, for `check-config`."""
    lines = [f"models ({len(config.models)}):"]
    for model_id, m in sorted(config.models.items()):
        extra = f" aliases={','.join(m.aliases)}" if m.aliases else ""
        lines.append(f"  {model_id}: {m.proxy} ttl={m.ttl}{extra}")
    compiled = config.compiled_matrix()
    if compiled is not None:
        lines.append(f"matrix sets ({len(compiled.sets)}, in tie-break order):")
        lines += [f"  {name}" for name in compiled.set_names]
    else:
        lines.append("groups:")
        for name, g in config.group_map().items():
            flags = f"swap={g.swap} exclusive={g.exclusive} persistent={g.persistent}"
            lines.append(f"  {name} [{flags}]: {', '.join(g.members) or '-'}")
    for title, items in (
        ("peers", config.peers),
        ("profiles", config.profiles),
        ("selectors", config.selectors),
    ):
        if items:
            lines.append(f"{title}: {', '.join(sorted(items))}")
    if config.hooks.on_startup.preload:
        lines.append(f"preload: {', '.join(config.hooks.on_startup.preload)}")
    return "\n".join(lines)
