"""YAML read as llama-swap reads it (Go yaml.v3, YAML 1.2 core schema).

Expected values were checked against the llama-swap build in ../shared/anchors (its
/v1/models `meta.llamaswap` shows metadata values, `name`/`description` string fields).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llamaswap.config import load_config
from llamaswap.config.load import parse_yaml
from llamaswap.config.yaml12 import load_first, loader_on
from llamaswap.errors import ConfigError

from ._helpers import load, messages

CMD = '"s ${PORT}"'


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1:30", "1:30"),  # YAML 1.1 read 90 (sexagesimal)
        ("12:30:45", "12:30:45"),
        ("1e-2", 0.01),  # YAML 1.1 read a string
        ("1E3", 1000.0),
        ("0o17", 15),
        ("017", 15),  # yaml.v3 still reads a leading 0 as octal
        ("08", 8.0),  # not octal, so a float
        ("0x1F", 31),
        ("-0b11", -3),
        ("1_000", 1000),
        ("1.", 1.0),
        (".5", 0.5),
        ("+.5", 0.5),
        (".5_0", 0.5),
        ("=", "="),  # YAML 1.1's value tag: PyYAML could not construct it
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("True", True),
        ("FALSE", False),
        ("tRUE", "tRUE"),
        ("~", None),
        ("Null", None),
        ("0x", "0x"),
        ("1e999", "1e999"),  # overflows: Go keeps the text
        ("18446744073709551615", 18446744073709551615),  # uint64
        ("-9223372036854775809", -9.223372036854775808e18),  # past int64: a float
        ("1.2.3", "1.2.3"),
        ("2001:db8::1", "2001:db8::1"),
        ("'1e-2'", "1e-2"),
        ('"0o17"', "0o17"),
    ],
)
def test_plain_scalars_resolve_as_yaml_v3(text: str, value: Any) -> None:
    got = parse_yaml(f"v: {text}\n")["v"]
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2024-01-05", "2024-01-05T00:00:00Z"),
        ("2024-1-5", "2024-01-05T00:00:00Z"),
        ("2024-01-05T10:00:00Z", "2024-01-05T10:00:00Z"),
        ("2024-01-05t10:00:00.500Z", "2024-01-05T10:00:00.5Z"),
        ("2024-01-05 1:2:3.1234567891", "2024-01-05T01:02:03.123456789Z"),
        ("2024-01-05T10:00:00+01:00", "2024-01-05T10:00:00+01:00"),
        ("2024-01-05T10:00:00-00:00", "2024-01-05T10:00:00Z"),
        ("2024-01-05T10:00:00", "2024-01-05T10:00:00"),  # no zone: not a Go timestamp
        ("2023-02-29", "2023-02-29"),  # no such day
        ("2024-13-01", "2024-13-01"),
        ("2\u0660\u0662\u0664-01-05", "2\u0660\u0662\u0664-01-05"),  # Arabic-Indic digits
        ("'2024-01-05'", "2024-01-05"),  # quoted: a string as written
    ],
)
def test_timestamps_read_as_llama_swap_prints_them(text: str, value: str) -> None:
    # llama-swap holds a plain timestamp as a Go time.Time and writes it in RFC 3339.
    c = load(f"models:\n  m: {{cmd: {CMD}, metadata: {{t: {text}}}}}\n")
    assert c.models["m"].metadata == {"t": value}


def test_scalars_in_string_fields_become_text() -> None:
    c = load(
        f"""
        apiKeys: [8675309]
        models:
          123: {{cmd: {CMD}, name: 2024, description: 1.50, aliases: [456, 1:30, true]}}
          m: {{cmd: {CMD}, useModelName: 0o17, env: [1e-2, -0.0, 1e21], checkEndpoint: 1e6}}
        """
    )
    assert c.api_keys == ["8675309"]
    numeric = c.models["123"]  # llama-swap drops every model when one ID is a bare number
    assert (numeric.name, numeric.description) == ("2024", "1.5")  # Go prints the float
    assert numeric.aliases == ["456", "1:30", "true"]
    assert c.resolve_model("456") == "123"
    m = c.models["m"]
    assert (m.use_model_name, m.check_endpoint) == ("15", "1e+06")
    assert m.env == ["0.01", "-0", "1e+21"]


def test_yaml_1_1_words_in_boolean_fields() -> None:
    # `yes`/`on` are strings, but yaml.v3 still reads them into a typed bool (so does Go).
    c = load(f"models:\n  m: {{cmd: {CMD}, unlisted: yes}}\n  n: {{cmd: {CMD}, unlisted: Off}}\n")
    assert (c.models["m"].unlisted, c.models["n"].unlisted) == (True, False)


def test_keys_are_text_and_written_once() -> None:
    c = load(f"models:\n  m: {{cmd: {CMD}, metadata: {{1: a, true: b, 2.50: c}}}}\n")
    assert c.models["m"].metadata == {"1": "a", "true": "b", "2.5": "c"}
    # yaml.v3 refuses a key written twice in one mapping (by its text: `1` and "1" too).
    (message,) = messages(f"models:\n  m:\n    cmd: {CMD}\n    name: a\n    name: b\n")
    assert 'mapping key "name" already defined at line 4' in message
    assert "line 5" in message
    (message,) = messages(f"models:\n  m: {{cmd: {CMD}, metadata: {{1: a, '1': b}}}}\n")
    assert 'mapping key "1" already defined at line 2' in message


def test_merge_keys_still_merge() -> None:
    c = load(
        f"""
        defs:
          base: &base {{cmd: {CMD}, ttl: 5, name: base}}
        models:
          m:
            <<: *base
            name: own
        """
    )
    assert (c.models["m"].ttl, c.models["m"].name) == (5, "own")


def test_typed_macro_alone_in_a_string_field_becomes_text() -> None:
    c = load(
        f"""
        macros: {{N: 2024, F: 1.50, B: true}}
        models:
          m: {{cmd: {CMD}, name: "${{N}}", description: "${{F}}", useModelName: "${{B}}"}}
          n: {{cmd: "s ${{PORT}} --n ${{N}} --f ${{F}}"}}
        """
    )
    m = c.models["m"]
    assert (m.name, m.description, m.use_model_name) == ("2024", "1.5", "true")
    assert c.models["n"].cmd == "s 5801 --n 2024 --f 1.5"


def test_second_document_is_ignored() -> None:
    # llama-swap reads only the first document: not even a syntax error or an unset
    # environment variable after `---` counts.
    for second in ("models:\n  n: {cmd: x}\n", "a: [\n", "a: ${env.UNSET_IN_DOC_TWO}\n"):
        c = load(f"models:\n  m: {{cmd: {CMD}}}\n---\n{second}")
        assert list(c.models) == ["m"]
    assert load("--- \nmodels:\n  m: {cmd: x, proxy: 'http://h:1'}\n...\n").models["m"].cmd == "x"


def test_floats_in_int_fields_truncate() -> None:
    c = load(
        f"""
        healthCheckTimeout: 20.9
        globalTTL: 10.5
        models:
          m: {{cmd: {CMD}, ttl: 30.5}}
          n: {{cmd: {CMD}}}
        """
    )
    assert (c.health_check_timeout, c.global_ttl) == (20, 10)
    assert (c.models["m"].ttl, c.models["n"].ttl) == (30, 10)


def test_alias_as_group_member_resolves_to_its_model() -> None:
    # llama-swap accepts the config, then refuses to start ("no model config for").
    text = f"""
        models:
          a: {{cmd: {CMD}, aliases: [al]}}
          b: {{cmd: {CMD}}}
          c: {{cmd: {CMD}}}
        groups:
          g: {{members: [al, b]}}
        """
    groups = load(text).group_map()
    assert groups["g"].members == ["a", "b"]
    assert groups["(default)"].members == ["c"]
    assert messages(text.replace("[al, b]", "[a, al]")) == [
        "groups.g.members: duplicate model member al found in group: g"
    ]


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text(f"models:\n  m:\n    cmd: {CMD}\n    name: [a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert str(path) in text
    assert "line 5" in text
    assert "<unicode string>" not in text
    path.write_text(f"models:\n  m:\n    cmd: {CMD}\n    cmd: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f'"{path}", line 4' in str(info.value)


def test_explicit_tags() -> None:
    tree = parse_yaml("a: !!int '12'\nb: !!str 12\nc: !!float 1\nd: !!bool 'true'\n")
    assert tree == {"a": 12, "b": "12", "c": 1.0, "d": True}
    assert isinstance(tree["c"], float)
    (message,) = messages("a: !!int abc\n")
    assert "cannot decode 'abc' as tag:yaml.org,2002:int" in message


def test_pure_python_parser_reads_the_same() -> None:
    # Without libyaml, PyYAML's own parser carries the same rules.
    text = (
        "a: [1:30, 1e-2, 0o17, 017, 08, =, yes, on, ~, True, 2024-01-05, 1_000, .5, 0x]\n"
        "b: {1: x, true: y, <<: {z: 1}}\n"
        "---\n"
        "c: [\n"
    )
    pure = load_first(text, loader_on(yaml.SafeLoader))
    assert pure == parse_yaml(text)
    assert pure["b"] == {"1": "x", "true": "y", "z": 1}
    with pytest.raises(yaml.YAMLError, match="already defined at line 1"):
        load_first("a: 1\na: 2\n", loader_on(yaml.SafeLoader))
