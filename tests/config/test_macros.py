"""Macros: env, declared, MODEL_ID, PORT, PID, macro-in-macro, typed substitution (spec §2.3)."""

from __future__ import annotations

import pytest

from llamaswap.config.macros import format_value, strip_comment_lines, substitute_env
from llamaswap.errors import ConfigError, ConfigProblem

from ._helpers import load, messages, problems


def test_basic_replacement_and_model_id() -> None:
    c = load(
        """
        macros:
          svr: /usr/bin/server
          args: "--ctx 4096"
        models:
          m1:
            cmd: "${svr} ${args} --port ${PORT} --alias ${MODEL_ID}"
            name: "Model ${MODEL_ID}"
            description: "runs ${svr}"
        """
    )
    m = c.models["m1"]
    assert m.cmd == "/usr/bin/server --ctx 4096 --port 5800 --alias m1"
    assert (m.name, m.description) == ("Model m1", "runs /usr/bin/server")


def test_macro_in_macro_lifo_chain() -> None:
    c = load(
        """
        macros:
          base: /models
          path: "${base}/llama"
          full: "${path}/q4.gguf --id ${MODEL_ID}"
        models:
          m: {cmd: "s ${full} ${PORT}"}
        """
    )
    assert c.models["m"].cmd == "s /models/llama/q4.gguf --id m 5800"


def test_forward_reference_is_unknown() -> None:
    assert messages(
        """
        macros:
          FIRST: "a-${SECOND}"
          SECOND: b
        models:
          m: {cmd: "s ${FIRST} ${PORT}"}
        """
    ) == ["models.m.cmd: unknown macro '${SECOND}' found in m.cmd"]


def test_model_macro_overrides_global_in_place() -> None:
    c = load(
        """
        macros:
          tag: global
          msg: "value-${tag}"
        models:
          m:
            cmd: "s ${msg} ${PORT}"
            metadata: {tag: "${tag}"}
            macros: {tag: model-level}
          other: {cmd: "s ${msg} ${PORT}"}
        """
    )
    assert c.models["m"].cmd == "s value-model-level 5800"
    assert c.models["m"].metadata == {"tag": "model-level"}
    assert c.models["other"].cmd == "s value-global 5801"


def test_model_macros_do_not_leak() -> None:
    assert messages(
        """
        models:
          m: {cmd: "s ${LOCAL} ${PORT}", macros: {LOCAL: x}}
          other: {cmd: "s ${LOCAL} ${PORT}"}
        """
    ) == ["models.other.cmd: unknown macro '${LOCAL}' found in other.cmd"]


@pytest.mark.parametrize("name", ["PORT", "MODEL_ID", "PID"])
def test_reserved_names(name: str) -> None:
    assert problems(f"macros:\n  {name}: x\n") == [
        ConfigProblem(f"macros.{name}", f"macro name '{name}' is reserved")
    ]
    assert messages(f"models:\n  m:\n    cmd: 's ${{PORT}}'\n    macros:\n      {name}: x\n") == [
        f"models.m.macros.{name}: model m: macro name '{name}' is reserved"
    ]


def test_macro_name_validation() -> None:
    long = "a" * 64
    assert messages(f"macros:\n  'bad name': x\n  {long}: y\n  ok-name_1: z\n") == [
        "macros.bad name: macro name 'bad name' contains invalid characters, "
        "must match ^[a-zA-Z0-9_-]+$",
        f"macros.{long}: macro name '{long}' exceeds maximum length of 63 characters",
    ]
    load(f"macros:\n  {'a' * 63}: fine\n")


def test_self_reference_and_invalid_type() -> None:
    assert messages("macros:\n  me: 'x ${me}'\n  lst: [1, 2]\n  mp: {a: 1}\n") == [
        "macros.me: macro 'me' contains self-reference",
        "macros.lst: macro 'lst' has invalid type []interface {}, must be a scalar type "
        "(string, int, float, or bool)",
        "macros.mp: macro 'mp' has invalid type map[string]interface {}, must be a scalar type "
        "(string, int, float, or bool)",
    ]


@pytest.mark.parametrize(
    ("field", "yaml_value"),
    [
        ("cmd", '"s ${PORT} ${NOPE}"'),
        ("cmdStop", '"stop ${NOPE}"'),
        ("proxy", '"http://h:1/${NOPE}"'),
        ("checkEndpoint", '"/${NOPE}"'),
        ("name", '"${NOPE}"'),
        ("description", '"${NOPE}"'),
    ],
)
def test_unknown_macro_per_field(field: str, yaml_value: str) -> None:
    base = {"cmd": '"s ${PORT}"'}
    base[field] = yaml_value
    body = ", ".join(f"{k}: {v}" for k, v in base.items())
    assert messages(f"models:\n  m: {{{body}}}\n") == [
        f"models.m.{field}: unknown macro '${{NOPE}}' found in m.{field}"
    ]


def test_unknown_macro_in_strip_params_metadata_capabilities_and_elsewhere() -> None:
    got = messages(
        """
        models:
          m:
            cmd: "s ${PORT}"
            filters: {stripParams: "a, ${NOPE}"}
            metadata: {deep: {x: "${META}"}}
            capabilities: {in: ["${CAP}"]}
            env: ["A=${ENVX}"]
        """
    )
    assert got == [
        "models.m.filters.stripParams: unknown macro '${NOPE}' found in m.filters.stripParams",
        "models.m.metadata.deep.x: model m metadata: unknown macro '${META}'",
        "models.m.capabilities.in[0]: model m capabilities: unknown macro '${CAP}'",
        "models.m.env[0]: model m env[0]: unknown macro '${ENVX}'",
    ]


def test_port_outside_port_models_should_have_been_substituted() -> None:
    assert messages(
        """
        models:
          m: {cmd: "s --fixed", proxy: "http://h:1", name: "${PORT}"}
        """
    ) == ["models.m.name: macro '${PORT}' should have been substituted in m.name"]


def test_pid_only_in_cmd_stop_and_deferred_through_macros() -> None:
    c = load(
        """
        macros:
          killer: "kill -TERM ${PID}"
        models:
          m: {cmd: "s ${PORT}", cmdStop: "${killer}"}
        """
    )
    assert c.models["m"].cmd_stop == "kill -TERM ${PID}"
    assert messages("models:\n  m: {cmd: 's ${PORT} ${PID}'}\n") == [
        "models.m.cmd: unknown macro '${PID}' found in m.cmd"
    ]


def test_typed_substitution_everywhere() -> None:
    c = load(
        """
        macros:
          TTL: 42
          FLAG: true
          TEMP: 0.7
          PORTBASE: 9100
          NAME: llama
        globalTTL: "${TTL}"
        sendLoadingState: "${FLAG}"
        startPort: "${PORTBASE}"
        models:
          m:
            cmd: "s ${PORT}"
            ttl: "${TTL}"
            timeouts: {connect: "${TTL}"}
            metadata: {temp: "${TEMP}", flag: "${FLAG}", text: "t=${TEMP} f=${FLAG}", n: "${NAME}"}
            filters:
              setParams: {temperature: "${TEMP}"}
        """
    )
    m = c.models["m"]
    assert (c.global_ttl, c.send_loading_state, c.start_port) == (42, True, 9100)
    assert (m.ttl, m.timeouts.connect, m.proxy) == (42, 42, "http://localhost:9100")
    assert m.metadata == {"temp": 0.7, "flag": True, "text": "t=0.7 f=true", "n": "llama"}
    assert m.filters.set_params == {"temperature": 0.7}


def test_map_keys_are_literal() -> None:
    c = load(
        """
        macros: {K: value}
        models:
          m: {cmd: "s ${PORT}", metadata: {"${K}": "${K}"}}
        """
    )
    assert c.models["m"].metadata == {"${K}": "value"}


def test_port_everywhere_in_model_including_set_params_by_id_keys() -> None:
    c = load(
        """
        models:
          m:
            cmd: "s --port ${PORT}"
            aliases: ["m-${PORT}"]
            checkEndpoint: "/health?p=${PORT}"
            metadata: {port: "${PORT}"}
            filters:
              setParamsByID:
                "m:${PORT}": {x: 1}
        """
    )
    m = c.models["m"]
    assert m.aliases == ["m-5800", "m:5800"]
    assert (m.check_endpoint, m.metadata) == ("/health?p=5800", {"port": 5800})
    assert list(m.filters.set_params_by_id) == ["m:5800"]


def test_set_params_by_id_key_collision_and_unknown_macro() -> None:
    assert messages(
        """
        macros: {A: same}
        models:
          m:
            cmd: "s ${PORT}"
            filters:
              setParamsByID:
                "${A}": {x: 1}
                same: {x: 2}
                "${NOPE}": {x: 3}
        """
    ) == [
        'models.m.filters.setParamsByID: model m filters.setParamsByID: keys "${A}" and "same" '
        "resolve to the same value",
        "models.m.filters.setParamsByID: unknown macro '${NOPE}' found in model m "
        "filters.setParamsByID key",
    ]


def test_top_level_macros_and_unknown_top_level_macro() -> None:
    c = load(
        """
        macros: {KEY: secret, HOST: "http://peer:1"}
        peers:
          p: {proxy: "${HOST}", apiKey: "${KEY}", models: [a], filters: {setParams: {k: "${KEY}"}}}
        """
    )
    assert (c.peers["p"].proxy, c.peers["p"].api_key) == ("http://peer:1", "secret")
    assert c.peers["p"].filters.set_params == {"k": "secret"}
    assert messages("peers:\n  p: {proxy: 'http://x', apiKey: '${NOPE}', models: [a]}\n") == [
        "peers.p.apiKey: unknown macro '${NOPE}'"
    ]


# --- env macros -----------------------------------------------------------------------------


def test_env_macros_in_many_places() -> None:
    env = {"BIN": "/opt/s", "CTX": "8192", "KEY": "k", "NAME": "nice"}
    c = load(
        """
        macros:
          ctx: "${env.CTX}"
        models:
          m:
            cmd: "${env.BIN} --ctx ${ctx} --port ${PORT} ${env.CTX}"
            cmdStop: "${env.BIN} stop"
            name: "${env.NAME}"
            metadata: {ctx: ${env.CTX}}
            filters: {stripParams: "${env.NAME}"}
            macros: {m: "${env.NAME}"}
        """,
        env,
    )
    m = c.models["m"]
    assert m.cmd == "/opt/s --ctx 8192 --port 5800 8192"
    assert (m.cmd_stop, m.name, m.metadata) == ("/opt/s stop", "nice", {"ctx": 8192})
    assert m.filters.strip_params == ["nice"]


def test_env_macros_missing_and_in_comments() -> None:
    text = """
        # ${env.IN_COMMENT}
        models:
          m:
            # indented ${env.ALSO_COMMENT}
            cmd: "s ${PORT} ${env.MISSING}"  # inline ${env.INLINE}
        """
    assert messages(text) == ["models.m.cmd: environment variable 'MISSING' is not set"]
    assert load(text, {"MISSING": "x"}).models["m"].cmd == "s 5800 x"


def test_env_macro_values_refused_or_escaped() -> None:
    with pytest.raises(ConfigError) as info:
        substitute_env("a: ${env.X}\n", {"X": "line\nbreak"})
    assert info.value.problems == [
        ConfigProblem(
            "a",
            "environment variable 'X' contains newlines or null bytes which are not allowed "
            "in YAML substitution",
        )
    ]
    with pytest.raises(ConfigError):
        substitute_env("a: ${env.X}\n", {"X": "cr\r"})
    c = load('models:\n  m: {cmd: "s ${PORT} ${env.Q}"}\n', {"Q": 'say "hi" \\o/'})
    assert c.models["m"].cmd == 's 5800 say "hi" \\o/'


def test_env_unparseable_yaml_scans_whole_text() -> None:
    with pytest.raises(ConfigError) as info:
        substitute_env("a: [\n# ${env.NOPE}\n", {})
    assert info.value.problems == [
        ConfigProblem("", "environment variable 'NOPE' is not set (line 2)")
    ]


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("a\nb", "a\nb"),
        ("# c\na", "a"),
        ("  # indented\na\n", "a\n"),
        ("a # not a comment", "a # not a comment"),
        ("a \\\n  # mid\n  b", "a \\\n  b"),
    ],
)
def test_strip_comment_lines(given: str, want: str) -> None:
    assert strip_comment_lines(given) == want


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (0.5, "0.5"),
        (2.0, "2"),
        (1e6, "1e+06"),
        ("s", "s"),
    ],
)
def test_format_value_like_go(value: str | int | float | bool, text: str) -> None:
    assert format_value(value) == text
