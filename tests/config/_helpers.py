"""Helpers for config tests: load YAML text through the real pipeline."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from llamaswap.config import Config, load_config_text
from llamaswap.errors import ConfigError, ConfigProblem

# Three models, `a` with alias `al`: the usual cast for routing and naming tests.
MODELS = """
models:
  a: {cmd: "s ${PORT}", aliases: [al]}
  b: {cmd: "s ${PORT}"}
  c: {cmd: "s ${PORT}"}
"""


def load(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Load dedented YAML text with a controlled environment."""
    return load_config_text(textwrap.dedent(text), env=env or {})


def problems(text: str, env: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """The problems a config must raise (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return info.value.problems


def messages(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    return [str(p) for p in problems(text, env)]
