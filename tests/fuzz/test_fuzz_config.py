"""Fuzzing the config loader: any text, any tree, only ever a ConfigError naming a YAML path.

Three generators feed the real pipeline (`load_config_text`, `merge_sources` + `build_config`):
arbitrary YAML-ish text; YAML text built from YAML's own odd corners (anchors, aliases,
recursive anchors, tags, deep nesting); and structured-but-wrong trees that follow the real
schema (walked from the pydantic models, so new keys are fuzzed without editing this file)
with values of the wrong type, odd macros, matrix DSL garbage, huge numbers and unicode.
A config that loads must also summarise. Every example is timed: a parser or macro pass that
grows with alias expansion would show up here as a slow example long before it hangs.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices, BaseModel

from llamaswap.config.load import build_config, load_config_text, parse_yaml, summarize
from llamaswap.config.merge import merge_sources
from llamaswap.config.model import Config
from llamaswap.errors import ConfigError

# Per-example time bound (generous for 2 busy cores; a healthy example takes milliseconds).
EXAMPLE_SECONDS = 5.0


def fuzz(max_examples: int) -> settings:
    """Settings for one fuzz test; every example is timed by hand in `_check` instead of by
    hypothesis' deadline, which turns a slow moment of a loaded machine into a flaky failure."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


# A problem at the root is about the document itself: a YAML syntax error (which names the
# line or position) or a document that is not a mapping.
ROOT_WORDS = ("line", "position", "mapping")
ENV = {"HOME": "/home/x", "EMPTY": "", "WEIRD": 'a"b\\c ${PORT}'}

# --------------------------------------------------------------------------------------------
# Values: names that collide on purpose, macro-ish strings, DSL garbage, unicode, huge numbers.

NAMES = ["a", "b", "c", "al", "m-1", "p/a", "x.y", "", " ", "1", "é", "${MODEL_ID}", "(default)"]
MACRO_BITS = [
    "${PORT}",
    "${MODEL_ID}",
    "${PID}",
    "${env.HOME}",
    "${env.NOPE}",
    "${env.WEIRD}",
    "${m}",
    "${bad name}",
    "${",
    "}",
    "$",
    "${${m}}",
    "${a-b_c}",
    "${ü}",
]
DSL_BITS = ["a", "b", "c", "x.y", "&", "|", "(", ")", "+", "+s1", " ", "!", "ä", "+s0"]

names = st.sampled_from(NAMES) | st.text(max_size=6)
huge_ints = st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 65535, 65536])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70) | huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(NAMES + MACRO_BITS),
    st.lists(st.sampled_from(MACRO_BITS + NAMES), max_size=4).map("".join),
    st.lists(st.sampled_from(DSL_BITS), max_size=8).map(" ".join),
    st.sampled_from(["http://127.0.0.1:${PORT}", "http://[::1", "http://h:99999", "ftp:", "5s"]),
)
garbage: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names | scalars, inner, max_size=4),
    max_leaves=12,
)


# --------------------------------------------------------------------------------------------
# Structured trees: the real keys, walked from the pydantic models, with values right or wrong.


def _keys(field: Any, name: str) -> list[str]:
    keys = {field.alias or name, name}
    if isinstance(field.validation_alias, AliasChoices):
        keys |= {k for k in field.validation_alias.choices if isinstance(k, str)}
    return sorted(keys)


def _value(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    """A value that fits `annotation` (roughly), mixed with garbage of any type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    right: st.SearchStrategy[Any]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        right = _model(annotation, depth + 1) if depth < 5 else st.just({})
    elif origin is dict:
        right = st.dictionaries(names, _value(args[1], depth + 1), max_size=3)
    elif origin is list:
        right = st.lists(_value(args[0], depth + 1), max_size=3)
    elif origin is typing.Literal:
        right = st.sampled_from(list(args)) | st.text(max_size=6)
    elif origin in (typing.Union, types.UnionType):
        right = st.one_of([_value(a, depth) for a in args if a is not type(None)])
    elif annotation is int:
        right = st.integers(min_value=-3, max_value=70000) | huge_ints
    elif annotation is bool:
        right = st.booleans()
    else:
        right = scalars
    return st.one_of(right, right, garbage) if depth < 6 else garbage


_MODELS: dict[type[BaseModel], st.SearchStrategy[dict[str, Any]]] = {}


def _model(cls: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    if cls not in _MODELS:
        fields = [(_keys(f, n), f.annotation) for n, f in cls.model_fields.items() if n != "id"]
        entries = [
            st.tuples(st.sampled_from(keys), st.deferred(lambda a=ann: _value(a, depth)))
            for keys, ann in fields
        ]
        extra = st.tuples(names, garbage)  # unknown keys are ignored, but must not break
        _MODELS[cls] = st.lists(st.one_of(*entries, extra), max_size=6).map(dict)
    return _MODELS[cls]


def _legacy(top: dict[str, Any], groups: Any, matrix: Any) -> dict[str, Any]:
    out = dict(top)
    if groups is not None:
        out["groups"] = groups
    if matrix is not None:
        out["matrix"] = matrix
    return out


matrix_tree = st.fixed_dictionaries(
    {},
    optional={
        "vars": st.dictionaries(names, names | garbage, max_size=3),
        "evict_costs": st.dictionaries(names, huge_ints | garbage, max_size=3),
        "sets": st.dictionaries(
            st.sampled_from(["s0", "s1", "s2"]) | names,
            st.lists(st.sampled_from(DSL_BITS), max_size=10).map(" ".join) | garbage,
            max_size=4,
        ),
    },
)
config_trees = st.builds(
    _legacy,
    _model(Config),
    st.none() | st.dictionaries(names, garbage, max_size=2),
    st.none() | matrix_tree | garbage,
)


def _has_empty_key(text: str) -> bool:
    """True when the document has a top-level key `""`, whose YAML path is the empty string."""
    try:
        tree = parse_yaml(text)
    except (yaml.YAMLError, ValueError):
        return False
    return isinstance(tree, dict) and "" in tree


def _check(load: Any, *texts: str) -> None:
    """Run `load()`: a Config that summarises, or a ConfigError whose problems name a path."""
    empty_key = any(_has_empty_key(t) for t in texts)
    start = time.monotonic()
    try:
        config = load()
    except ConfigError as exc:
        assert exc.problems, exc
        for problem in exc.problems:
            # A top-level key "" has the empty string as its YAML path.
            named = problem.path or empty_key
            assert named or any(w in problem.message for w in ROOT_WORDS), problem
            assert "Traceback" not in problem.message
    else:
        summarize(config)
    elapsed = time.monotonic() - start
    assert elapsed < EXAMPLE_SECONDS, f"one example took {elapsed:.1f}s"


def _dump(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


@fuzz(300)
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    _check(lambda: load_config_text(text, env=ENV), text)


YAML_BITS = [
    "models:\n",
    "  a:\n",
    "    cmd: s ${PORT}\n",
    "    proxy: http://x:${PORT}\n",
    "    aliases: [al, al]\n",
    "macros:\n",
    "  m: &v [1, 2]\n",
    "  ${m}: 1\n",
    "x: &a [*a]\n",
    "y: &b {k: *b}\n",
    "z: *a\n",
    "q: !!set {a, b}\n",
    "q: !!omap [{a: 1}]\n",
    "q: !!binary aGk=\n",
    "q: !!timestamp 2001-12-14\n",
    "q: !!python/object:os.system x\n",
    "q: !!float nan\n",
    "q: 0x7fffffffffffffffffff\n",
    "? [a, b]\n: c\n",
    "<<: {a: 1}\n",
    "- a\n",
    "---\n",
    "...\n",
    "'\n",
    '"\\x00"\n',
    "{\n",
    "\t\n",
    "# ${env.NOPE}\n",
    "matrix: {sets: {s: 'a & (b | +s'}}\n",
    "groups: {g: {members: *a}}\n",
    "routing: {router: {use: matrix}}\n",
    "startPort: 99999999999999999999\n",
    "healthCheckTimeout: .inf\n",
    "ttl: -.inf\n",
    "\u202e\ufeff\U0001f600: \u0000\n",
]


@fuzz(300)
@given(st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=8), max_size=12).map("".join))
def test_yaml_corners(text: str) -> None:
    _check(lambda: load_config_text(text, env=ENV), text)


@fuzz(400)
@given(config_trees)
def test_structured_wrong_configs(tree: dict[str, Any]) -> None:
    text = _dump(tree)
    _check(lambda: load_config_text(text, env=ENV), text)


@fuzz(100)
@given(st.lists(config_trees | garbage, min_size=2, max_size=3))
def test_merged_sources(trees: list[Any]) -> None:
    texts = [_dump(t) for t in trees]

    def load() -> Config:
        sources = [(f"f{i}.yaml", parse_yaml(text)) for i, text in enumerate(texts)]
        return build_config(merge_sources(sources), "merged")

    _check(load, *texts)


def _alias_pyramid(levels: int, width: int) -> str:
    """The billion-laughs shape: each level is a list of `width` aliases of the one below."""
    lines = ["l0: &l0 [" + ", ".join(["'${MODEL_ID}'"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nmodels:\n  a:\n    cmd: s\n    metadata: *l{levels - 1}\n"


@pytest.mark.parametrize(
    "text",
    [
        "x: &a [*a]\n",
        "models:\n  m: &m {cmd: s, metadata: *m}\n",
        "a: " + "[" * 990 + "]" * 990 + "\n",
        "models:\n  m:\n    cmd: s\n    metadata: " + "[" * 900 + "]" * 900 + "\n",
        "".join(" " * i + "k:\n" for i in range(990)),
        _alias_pyramid(9, 10),
    ],
    ids=["recursive-list", "recursive-model", "deep-flow", "deep-metadata", "deep-block", "laughs"],
)
def test_pathological_yaml(text: str) -> None:
    _check(lambda: load_config_text(text, env=ENV))


BAD_FILES = [
    "models: [",
    "models:\n  a: {cmd: 1, ttl: nope, proxy: 'http://[::1'}\n",
    "x: &a [*a]\n",
    "matrix: {sets: {s: 'a &'}}\nmodels: {a: {cmd: s}}\n",
    "\x00\x01",
]


def test_check_config_cli_on_bad_files(tmp_path: Path) -> None:
    """`check-config` exits non-zero and prints problems, never a traceback."""
    for i, text in enumerate(BAD_FILES):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "llamaswap", "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, (text, output)
        assert "Traceback" not in output, (text, output)
        assert "invalid config" in output, (text, output)
