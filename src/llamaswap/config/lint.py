"""What is wrong with a config but does not stop it from loading. Pure.

llama-swap ignores unknown keys silently and loads a model without a `cmd` (every request to
it then fails). We load the same configs, but say so:

* `unknown_keys`: a key no part of the config knows (`proxi`, `healthCheckTimout`) is a
  *warning* with a "did you mean" from the known spellings at that place. At the top level
  only near misses are reported (`model:` for `models:`): other top-level keys are the usual
  place for YAML anchors (`defs:`, `x-common:`) and must stay quiet.
* `unusable_models`: a model that can never start (no `cmd`, or one that is blank once
  comment lines are removed). `check-config` reports these as errors; the server logs them
  as errors and still loads the config, as llama-swap does.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel

from llamaswap.config.model import Config, GroupConfig, MatrixConfig, ModelConfig
from llamaswap.errors import ConfigProblem

__all__ = ["unknown_keys", "unusable_models"]

# Keys read from the raw tree before the typed decode: legacy top-level spellings
# (config/normalise.py) and model macros (config/load.py).
_RAW_KEYS: dict[type[BaseModel], dict[str, Any]] = {
    Config: {"groups": dict[str, GroupConfig], "matrix": MatrixConfig},
    ModelConfig: {"macros": dict[str, Any]},
}
# Keys llama-swap's model struct has but that a user cannot set: known, yet worth a word.
_MODEL_NO_EFFECT = {
    "healthCheckTimeout": "healthCheckTimeout is global only; the per-model value is ignored"
}
_CUTOFF = 0.75


def _spellings(cls: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
    """Every accepted key of `cls` -> its annotation, and the YAML spellings to suggest."""
    accepted: dict[str, Any] = {}
    shown: list[str] = []
    for name, field in cls.model_fields.items():
        names = [field.alias or name]
        if isinstance(field.validation_alias, AliasChoices):
            names += [c for c in field.validation_alias.choices if isinstance(c, str)]
        elif isinstance(field.validation_alias, str):
            names.append(field.validation_alias)
        shown.append(names[0])
        for spelling in (*names, name):  # populate_by_name: the attribute name works too
            accepted[spelling] = field.annotation
    extra = _RAW_KEYS.get(cls, {})
    return accepted | extra, shown + list(extra)


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """`X` for `X` or `X | None` when X is a pydantic model."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _model_class(inner[0])
    return None


def _map_of_models(annotation: Any) -> type[BaseModel] | None:
    """`X` for `dict[str, X]` when X is a pydantic model."""
    if typing.get_origin(annotation) is dict:
        return _model_class(typing.get_args(annotation)[1])
    return None


def _close_matches(key: str, shown: list[str]) -> list[str]:
    import difflib  # noqa: PLC0415 - only for a config with an unknown key

    return difflib.get_close_matches(key, shown, n=1, cutoff=_CUTOFF)


def _unknown(key: str, where: str, shown: list[str]) -> ConfigProblem:
    guess = _close_matches(key, shown)
    hint = f'; did you mean "{guess[0]}"?' if guess else ""
    return ConfigProblem(where, f'unknown key "{key}" (ignored{hint})')


def _walk(node: dict[Any, Any], cls: type[BaseModel], path: str) -> list[ConfigProblem]:
    accepted, shown = _spellings(cls)
    found: list[ConfigProblem] = []
    for raw_key, value in node.items():
        key = str(raw_key)
        where = f"{path}.{key}"
        if cls is ModelConfig and key in _MODEL_NO_EFFECT:
            found.append(ConfigProblem(where, _MODEL_NO_EFFECT[key]))
            continue
        if key not in accepted:
            found.append(_unknown(key, where, shown))
            continue
        found += _walk_value(value, accepted[key], where)
    return found


def _walk_value(value: Any, annotation: Any, where: str) -> list[ConfigProblem]:
    if not isinstance(value, dict):
        return []  # a wrong type is the typed decode's business
    if (inner := _model_class(annotation)) is not None:
        return _walk(value, inner, where)
    if (member := _map_of_models(annotation)) is not None:
        found: list[ConfigProblem] = []
        for name, body in value.items():
            if isinstance(body, dict):
                found += _walk(body, member, f"{where}.{name}")
        return found
    return []  # free-form values: metadata, setParams, macros, ...


def unknown_keys(tree: dict[Any, Any]) -> list[ConfigProblem]:
    """Warnings for keys of the raw `tree` that llama-swap would ignore (see module doc)."""
    accepted, shown = _spellings(Config)
    found: list[ConfigProblem] = []
    for raw_key, value in tree.items():
        key = str(raw_key)
        if key in accepted:
            found += _walk_value(value, accepted[key], key)
        elif _close_matches(key, shown):
            found.append(_unknown(key, key, shown))
    return found


def unusable_models(models: Any) -> list[ConfigProblem]:
    """Models of a raw `models` mapping (macros applied) that can never start."""
    if not isinstance(models, dict):
        return []
    found: list[ConfigProblem] = []
    for model_id in sorted(models, key=str):
        body = models[model_id]
        if not isinstance(body, dict):
            continue
        cmd = body.get("cmd")
        if cmd is None or (isinstance(cmd, str) and not cmd.strip()):
            what = "has no cmd" if cmd is None else "has an empty cmd"
            found.append(
                ConfigProblem(
                    f"models.{model_id}.cmd",
                    f"model {model_id} {what}: it can never start (every request to it fails)",
                )
            )
    return found
