"""Loading from files and merging a config dir (spec §2.13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.config import load_config
from llamaswap.errors import ConfigError, ConfigProblem


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def errors(*args: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(*args, env=env or {})  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_single_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "models:\n  a: {cmd: 's ${PORT}'}\n")
    assert list(load_config(cfg, env={}).models) == ["a"]


def test_error_names_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "globalTTL: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    assert info.value.source == str(cfg)
    assert str(cfg) in str(info.value)


def test_neither_source() -> None:
    assert errors(None) == ["at least one of -config or -config-dir must be provided"]


def test_dir_only_sorted_and_merged(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(
        d / "20-b.yml", "apiKeys: [k2]\nmacros: {B: bee}\nmodels:\n  b: {cmd: 's ${PORT} ${B}'}\n"
    )
    write(d / "10-a.yaml", "apiKeys: [k1]\nmacros: {A: a}\nmodels:\n  a: {cmd: 's ${PORT} ${A}'}\n")
    write(d / "empty.yaml", "")
    write(d / "notes.txt", "not: [yaml")
    c = load_config(None, d, env={})
    assert c.api_keys == ["k1", "k2"]
    assert list(c.macros) == ["A", "B"]
    assert c.models["b"].cmd == "s 5801 bee"


def test_file_plus_dir_with_routing_groups_and_env_per_file(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "main.yaml",
        "healthCheckTimeout: 60\nmodels:\n  a: {cmd: 's ${PORT}'}\n"
        "routing:\n  router:\n    settings:\n      groups:\n        g1: {members: [a]}\n",
    )
    d = tmp_path / "d"
    d.mkdir()
    write(
        d / "x.yaml",
        "healthCheckTimeout: 60\nhooks: {on_startup: {preload: [${env.PRE}]}}\n"
        "models:\n  b: {cmd: 's ${PORT}'}\n"
        "routing:\n  router:\n    settings:\n      groups:\n        g2: {members: [b]}\n",
    )
    c = load_config(cfg, d, env={"PRE": "b"})
    assert set(c.group_map()) == {"g1", "g2", "(default)"}
    assert c.hooks.on_startup.preload == ["b"]


def test_conflicts_and_duplicates(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "main.yaml",
        "globalTTL: 5\nlogLevel: info\nmodels:\n  a: {cmd: 's ${PORT}'}\n"
        "peers:\n  p: {proxy: 'http://h', models: [x]}\nhooks: {on_startup: {preload: [a]}}\n",
    )
    d = tmp_path / "d"
    d.mkdir()
    other = write(
        d / "o.yaml",
        "globalTTL: 6\nlogLevel: info\nmodels:\n  a: {cmd: other}\n"
        "peers:\n  p: {proxy: 'http://h', models: [x]}\nhooks: {on_startup: {preload: {x: 1}}}\n",
    )
    assert errors(cfg, d) == [
        f'globalTTL: conflict at "globalTTL": {other} sets a different value than a previous '
        "source",
        f'models.a: duplicate model "a" found in {other} (already defined in another config '
        "source)",
        f'peers.p: duplicate peer "p" found in {other} (already defined in another config source)',
        f'hooks.on_startup.preload: conflict at "hooks.on_startup.preload": {other} sets a '
        "mapping where a previous source set a sequence",
    ]


def test_null_yields_and_equal_scalars(tmp_path: Path) -> None:
    cfg = write(tmp_path / "main.yaml", "globalTTL:\nstartPort: 6000\n")
    d = tmp_path / "d"
    d.mkdir()
    write(d / "o.yaml", "globalTTL: 7\nstartPort: 6000\n")
    c = load_config(cfg, d, env={})
    assert (c.global_ttl, c.start_port) == (7, 6000)


def test_unknown_macro_after_merge(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write(d / "a.yaml", "models:\n  a: {cmd: 's ${PORT} ${FROM_B}'}\n")
    write(d / "b.yaml", "macros: {FROM_B: ok}\n")
    assert load_config(None, d, env={}).models["a"].cmd == "s 5800 ok"
    write(d / "b.yaml", "macros: {OTHER: ok}\n")
    assert errors(None, d) == ["models.a.cmd: unknown macro '${FROM_B}' found in a.cmd"]


def test_config_file_inside_dir_rejected(tmp_path: Path) -> None:
    cfg = write(tmp_path / "main.yaml", "{}\n")
    assert errors(cfg, tmp_path) == [f"config file {cfg} is also inside config dir {tmp_path}"]


def test_all_empty_gives_defaults(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "")
    assert load_config(None, tmp_path, env={}).health_check_timeout == 120


def test_store_path_checks(tmp_path: Path) -> None:
    ok = write(tmp_path / "c.yaml", f"store: {{path: {tmp_path / 'activity.db'}}}\n")
    assert load_config(ok, env={}).store.path == str(tmp_path / "activity.db")
    bad = write(tmp_path / "d.yaml", f"store: {{path: {tmp_path}}}\n")
    assert errors(bad) == [f"store.path: {tmp_path} is a directory, not a file"]
    missing = write(tmp_path / "e.yaml", f"store: {{path: {tmp_path / 'no' / 'x.db'}}}\n")
    assert errors(missing) == [f"store.path: directory {tmp_path / 'no'} is not writable"]


def test_yaml_errors_verbatim(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "models: [\n")
    (message,) = errors(cfg)
    assert "while parsing" in message or "expected" in message


def test_yaml_12_booleans(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.yaml",
        "models:\n  a: {cmd: 's ${PORT}', metadata: {on: off, yes: true}}\n",
    )
    assert load_config(cfg, env={}).models["a"].metadata == {"on": "off", "yes": True}


def test_problem_type() -> None:
    assert str(ConfigProblem("a.b", "bad")) == "a.b: bad"
