"""Findings that never refuse a config: unknown keys (warnings) and models that can never
start (issue 12, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.config import load_config
from llamaswap.errors import ConfigError, ConfigProblem

from ._helpers import load

TYPOS = """
healthCheckTimout: 30
model:
  x: 1
defs:
  common: &flag "--verbose"
x-notes: kept for anchors
models:
  a:
    cmd: server --port ${PORT} *flag
    proxi: http://127.0.0.1:${PORT}
    aliasses: [b]
    healthCheckTimeout: 5
    macros: {m: 1}
    filters: {strip_params: "x", setParams: {anything: {goes: here}}}
    metadata: {free: {form: true}}
groups:
  g: {member: [a], members: [a]}
peers:
  p: {proxy: "http://example.com", apikey: k, models: [z]}
hooks:
  onStartup: {preload: [a]}
"""


def test_unknown_keys_are_warnings_with_a_guess_and_never_refused() -> None:
    config = load(TYPOS)
    assert config.health_check_timeout == 120  # the typo really was ignored
    assert config.warnings == [
        ConfigProblem(
            "healthCheckTimout",
            'unknown key "healthCheckTimout" (ignored; did you mean "healthCheckTimeout"?)',
        ),
        ConfigProblem("model", 'unknown key "model" (ignored; did you mean "models"?)'),
        ConfigProblem("models.a.proxi", 'unknown key "proxi" (ignored; did you mean "proxy"?)'),
        ConfigProblem(
            "models.a.aliasses", 'unknown key "aliasses" (ignored; did you mean "aliases"?)'
        ),
        ConfigProblem(
            "models.a.healthCheckTimeout",
            "healthCheckTimeout is global only; the per-model value is ignored",
        ),
        ConfigProblem("groups.g.member", 'unknown key "member" (ignored; did you mean "members"?)'),
        ConfigProblem("peers.p.apikey", 'unknown key "apikey" (ignored; did you mean "apiKey"?)'),
        ConfigProblem(
            "hooks.onStartup", 'unknown key "onStartup" (ignored; did you mean "on_startup"?)'
        ),
    ]
    assert config.unusable == []


def test_a_clean_config_has_no_findings() -> None:
    config = load("models:\n  a:\n    cmd: s ${PORT}\n    health_check_timeout_is_not: x\n")
    assert [p.path for p in config.warnings] == ["models.a.health_check_timeout_is_not"]
    clean = load('healthCheckTimeout: 30\nmodels:\n  a: {cmd: "s ${PORT}", checkEndpoint: none}\n')
    assert clean.warnings == [] and clean.unusable == []


def test_models_that_can_never_start_load_and_are_listed() -> None:
    config = load(
        """
        models:
          ok: {cmd: "s ${PORT}"}
          empty:
            # cmd: s ${PORT}
          blank:
            cmd: |
              # only a comment
            proxy: http://127.0.0.1:9
          nocmd: {proxy: "http://127.0.0.1:9"}
        """
    )
    assert sorted(config.models) == ["blank", "empty", "nocmd", "ok"]
    assert config.models["empty"].cmd == "" and config.models["empty"].proxy == ""
    assert [p.path for p in config.unusable] == [
        "models.blank.cmd",
        "models.empty.cmd",
        "models.nocmd.cmd",
    ]
    assert "model empty has no cmd: it can never start" in config.unusable[1].message
    assert "model blank has an empty cmd" in config.unusable[0].message


def test_every_problem_is_reported_together_type_errors_included() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            """
            models:
              a: {cmd: "s ${PORT}", ttl: soon, proxi: x}
              b: {proxy: "http://127.0.0.1:9"}
            """
        )
    error = info.value
    assert [p.path for p in error.problems] == ["models.a.ttl", "models.b.cmd"]
    assert [p.path for p in error.warnings] == ["models.a.proxi"]
    text = str(error)
    assert "models.a.ttl: Input should be a valid integer" in text
    assert "warnings:\n  - models.a.proxi" in text


def test_yaml_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  a:\n    cmd: [x\n   proxy: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f'in "{path}", line' in text
    assert "<unicode string>" not in text
