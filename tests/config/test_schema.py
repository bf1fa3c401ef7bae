"""The editor schema (`llamaswap schema`): described, closed where llamaswap knows the keys,
open where the user names them, and true to every config the loader accepts."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

from llamaswap.config import config_schema, load_config_text
from llamaswap.config.lint import unknown_keys
from llamaswap.config.load import parse_yaml
from llamaswap.config.model import Config
from llamaswap.config.schema import DESCRIPTIONS, DIALECT
from llamaswap.errors import ConfigError

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
_TOP_KEYS = {f.alias or n for n, f in Config.model_fields.items()} | {"groups", "matrix"}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(config_schema())


def _errors(validator: Draft202012Validator, text: str) -> list[str]:
    """`path: message` of every failed check, down inside `anyOf` (as an editor shows them)."""
    tree = parse_yaml(textwrap.dedent(text))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _leaves(validator.iter_errors(tree))
    ]


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        if error.context:
            yield from _leaves(error.context)
        else:
            yield error


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object with `properties`, anywhere in the schema, with its location."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}/{i}")


# --- the schema itself -------------------------------------------------------------------


def test_cli_prints_a_valid_draft_2020_12_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llamaswap", "schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    schema = json.loads(out)
    Draft202012Validator.check_schema(schema)  # raises SchemaError when it is not
    assert schema["$schema"] == DIALECT
    assert schema["title"] == "llamaswap configuration"
    assert schema == config_schema()


def test_every_property_has_a_description() -> None:
    schema = config_schema()
    missing = [
        f"{path}/{kind}/{key}"
        for path, node in _objects(schema)
        for kind in ("properties", "patternProperties")
        for key, prop in node.get(kind, {}).items()
        if not (isinstance(prop, dict) and str(prop.get("description", "")).strip())
    ]
    assert missing == []
    # Not vacuous: the whole config, the models and the routing blocks are all in there.
    counted = sum(len(node["properties"]) for _, node in _objects(schema))
    assert counted > 130
    for name in ("ModelConfig", "GroupConfig", "MatrixConfig", "RoutingConfig", "SleepConfig"):
        assert schema["$defs"][name]["properties"]


def test_description_table_names_only_real_properties() -> None:
    # A renamed field must not leave its description behind under the old name.
    schema = config_schema()
    for name, table in DESCRIPTIONS.items():
        node = schema if name == "Config" else schema["$defs"][name]
        known = set(node["properties"]) | {k.strip("^$") for k in node.get("patternProperties", {})}
        assert set(table) <= known, name


def test_defaults_are_shown() -> None:
    schema = config_schema()
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert schema["properties"]["healthCheckTimeout"]["default"] == 120
    assert model["checkEndpoint"]["default"] == "/health"
    assert model["aliases"]["default"] == []  # a default_factory, which pydantic leaves out
    assert schema["$defs"]["SchedulerConfig"]["properties"]["policy"]["default"] == "batch"
    assert schema["$defs"]["GroupConfig"]["properties"]["swap"]["default"] is True


def test_ignored_keys_are_valid_but_not_offered(validator: Draft202012Validator) -> None:
    schema = config_schema()
    assert "id" not in schema["$defs"]["ModelConfig"]["properties"]
    assert _errors(validator, "models: {a: {cmd: s, id: other}}") == []
    assert _errors(validator, "models: {a: {cmd: s, id: [1]}}")
    assert schema["properties"]["logRequests"]["deprecated"] is True


def test_objects_are_closed_but_the_top_level_stays_open() -> None:
    schema = config_schema()
    assert schema.get("additionalProperties", True) is not False
    for name, node in schema["$defs"].items():
        if "properties" in node:
            assert node["additionalProperties"] is False, name


# --- real configs ------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(validator: Draft202012Validator, path: Path) -> None:
    assert _errors(validator, path.read_text()) == []


def _string_constants(path: Path) -> Iterator[str]:
    """Multi-line string literals of a test module, including `CONST + "..."` sums."""
    tree = ast.parse(path.read_text())
    consts: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            text = node.value.value
            if isinstance(text, str):
                consts |= {t.id: text for t in node.targets if isinstance(t, ast.Name)}

    def value(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return consts.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            return left + right if left is not None and right is not None else None
        return None

    for found in ast.walk(tree):
        text = value(found) if isinstance(found, ast.Constant | ast.BinOp) else None
        if text and "\n" in text and ":" in text:
            yield textwrap.dedent(text)


def _config_fixtures() -> Iterator[tuple[str, str]]:
    """(where, text) of every YAML config written as a literal in the tests."""
    seen: set[str] = set()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for text in _string_constants(path):
            if text in seen:
                continue
            seen.add(text)
            try:
                tree = parse_yaml(text)
            except yaml.YAMLError:  # not YAML: not a config fixture
                continue
            if isinstance(tree, dict) and {str(k) for k in tree} & _TOP_KEYS:
                yield str(path.relative_to(ROOT)), text


def test_every_config_fixture_that_loads_validates(validator: Draft202012Validator) -> None:
    loaded = flagged = 0
    for where, text in _config_fixtures():
        try:
            config = load_config_text(text, env={})
        except ConfigError:
            continue  # refused by the loader: the schema may or may not see why
        errors = _errors(validator, text)
        if not config.warnings:
            loaded += 1
            assert errors == [], f"{where}:\n{text}"
        elif any("." in w.path for w in config.warnings):
            # An unknown key below the top level: the editor flags it too.
            flagged += 1
            assert errors, f"{where}: warned about but valid:\n{text}"
    # Not vacuous: the collector found the config tests' fixtures.
    assert loaded > 50
    assert flagged >= 1


# --- what an editor flags and what it accepts --------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        ('models: {a: {cmd: "s ${PORT}", proxi: "http://h"}}', "models.a", "proxi"),
        ('models: {a: {cmd: "s", filters: {stripParam: "x"}}}', "models.a.filters", "stripParam"),
        ('models: {a: {cmd: "s", timeouts: {conect: 5}}}', "models.a.timeouts", "conect"),
        ('models: {a: {cmd: "s", healthCheckTimeout: 5}}', "models.a", "healthCheckTimeout"),
        ("routing: {scheduler: {maxQueu: 3}}", "routing.scheduler", "maxQueu"),
        ("routing: {router: {use: group, setings: {}}}", "routing.router", "setings"),
        ("groups: {g: {member: [a]}}", "groups.g", "member"),
        ("matrix: {set: {s: a}}", "matrix", "set"),
        ("peers: {p: {proxy: http://h, models: [m], apikey: k}}", "peers.p", "apikey"),
        ("hooks: {onStartup: {preload: [a]}}", "hooks", "onStartup"),
        (
            "selectors: {s: {strategy: pin, targets: [a], settings: {spilover: 2}}}",
            "selectors.s.settings",
            "spilover",
        ),
        ("devices: {gpu0: {memory: 1GiB, idx: 0}}", "devices.gpu0", "idx"),
    ],
)
def test_a_typo_in_a_closed_object_is_flagged(
    validator: Draft202012Validator, text: str, where: str, key: str
) -> None:
    errors = _errors(validator, text)
    assert any(e.startswith(f"{where}: ") and f"'{key}'" in e for e in errors), errors
    # ... where the loader warns about the same key, which it ignores (config/lint.py).
    assert f"{where}.{key}" in [w.path for w in unknown_keys(parse_yaml(text))]


def test_open_maps_accept_any_key(validator: Draft202012Validator) -> None:
    text = """
        defs: {common: &common {ttl: 60}}   # a top-level key holding anchors
        macros: {anything: x, n: 3}
        models:
          a:
            cmd: "s ${PORT}"
            <<: *common
            macros: {local: y}
            metadata: {any: {deep: [1, 2]}}
            env: ["A=1"]
            filters:
              setParams: {temperature: 0.2, whatever: {x: 1}}
              setParamsByID: {"a:hot": {temperature: 1.5}}
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {x: a, y: b}
                evict_costs: {x: 5}
                sets: {one: "x & y"}
          scheduler: {settings: {fifo: {priority: {a: 3}}}}
        profiles: {night: {pins: {chat: a}}}
        selectors: {chat: {strategy: warm, targets: [a, b]}}
        peers: {box: {proxy: http://h, models: [m]}}
        devices: {gpu0: {memory: 24GiB}, gpu7: {memory: 1024}}
        """
    assert _errors(validator, text) == []


def test_groups_and_matrix_are_described_in_both_places() -> None:
    schema = config_schema()
    settings = schema["$defs"]["RouterSettings"]["properties"]
    for key in ("groups", "matrix"):
        assert schema["properties"][key]["description"].startswith("Legacy spelling")
        assert settings[key]["description"]
    for prop in schema["$defs"]["MatrixConfig"]["properties"].values():
        assert prop["description"]


@pytest.mark.parametrize(
    "text",
    [
        'models: {a: {cmd: "s", filters: {strip_params: "a, b"}}}',
        'models: {a: {cmd: "s", filters: {stripParams: [a, b]}}}',
        "peers: {p: {proxy: http://h, models: [m], filters: {strip_params: x}}}",
        "health_check_timeout: 30",
        'models: {a: {cmd: "s", cmd_stop: kill, filters: {set_params_by_id: {x: {t: 1}}}}}',
        "routing: {scheduler: {max_wait: 30s, maxQueue: 5}}",
    ],
)
def test_other_spellings_are_valid(validator: Draft202012Validator, text: str) -> None:
    assert _errors(validator, text) == []


def test_another_spelling_is_type_checked(validator: Draft202012Validator) -> None:
    assert _errors(validator, "health_check_timeout: soon")
    assert _errors(validator, 'models: {a: {cmd: "s", filters: {strip_params: {x: 1}}}}')


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('models: {a: {cmd: "s", ttl: "${TTL}"}}', True),  # takes the macro's type
        ("models:\n  a:\n    cmd: s\n    ttl: ${env.TTL}", True),
        ('models: {a: {cmd: "s", ttl: }}', True),  # empty: not set
        ("models: {a: }", True),  # every line of the body commented out
        ("routing: ", True),
        ('models: {a: {cmd: "s", ttl: soon}}', False),
        # Go's decoder: a scalar in a text field is its text, a float in an int is truncated.
        ("models: {a: {cmd: s, name: 2024, aliases: [123], ttl: 30.5}}", True),
        ("models: {a: {cmd: s, name: [x]}}", False),
        ('models: {a: {cmd: "s", maxWait: 1m30s}}', True),
        ('models: {a: {cmd: "s", maxWait: 90}}', True),
        ('models: {a: {cmd: "s", maxWait: soon}}', False),
        ('models: {a: {cmd: "s", sleep: vllm}}', True),
        ('models: {a: {cmd: "s", sleep: {sleep: "POST /s", wake: /w}}}', True),
        ('models: {a: {cmd: "s", sleep: {sleep: "POST /s", wake: /w, stat: /x}}}', False),
        ('models: {a: {cmd: "s", sleep: deep}}', False),
        ('models: {a: {cmd: "s", resources: {memory: {gpu0: 10GiB, gpu1: 512}}}}', True),
        ('models: {a: {cmd: "s", resources: {memory: lots}}}', False),
        ('models: {a: {cmd: "s", capabilities: {in: [text, image], tools: true}}}', True),
        ('models: {a: {cmd: "s", capabilities: {in: [smell]}}}', False),
        ("routing: {router: {use: ''}, scheduler: {use: fifo, policy: fifo}}", True),
        ("routing: {scheduler: {policy: lifo}}", False),
        ("logToStdout: both", True),
        ("logToStdout: everywhere", False),
        ("selectors: {s: {strategy: random, targets: [a]}}", False),
        ("selectors: {s: {targets: [a]}}", False),  # strategy is required
        ("peers: {p: {proxy: http://h}}", False),  # models are required
        ("performance: {every: 10s}", True),
        ("performance: {every: often}", False),
    ],
)
def test_values(validator: Draft202012Validator, text: str, valid: bool) -> None:
    assert (_errors(validator, text) == []) is valid, _errors(validator, text)
