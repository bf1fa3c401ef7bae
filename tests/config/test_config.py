"""Global keys, defaults, ports, aliases, API keys, TTLs, timeouts (spec §2.2, §2.4, §8.2/8.3)."""

from __future__ import annotations

from llamaswap.config import load_config_text
from llamaswap.config.model import DEFAULT_IGNORE_PATHS
from llamaswap.errors import ConfigProblem

from ._helpers import load, messages, problems


def test_defaults() -> None:
    c = load("models:\n  m:\n    cmd: server --port ${PORT}\n")
    assert c.health_check_timeout == 120
    assert c.start_port == 5800
    assert c.log_level == "info"
    assert c.log_to_stdout == "proxy"
    assert c.capture_buffer == 5
    assert c.metrics_max_in_memory == 1000
    assert c.unload_timeout == 10
    assert c.upstream.ignore_paths == list(DEFAULT_IGNORE_PATHS)
    assert c.ui.activity.session_id == ["X-Session-ID", "X-Litellm-Session-Id"]
    m = c.models["m"]
    assert m.id == "m"
    assert m.proxy == "http://localhost:5800"
    assert m.check_endpoint == "/health"
    assert (m.ttl, m.unload_timeout, m.concurrency_limit) == (0, 10, 10)
    assert m.send_loading_state is False
    t = m.timeouts
    assert (t.connect, t.keepalive, t.response_header) == (30, 30, 0)
    assert (t.tls_handshake, t.expect_continue, t.idle_conn) == (10, 1, 90)
    assert c.group_map()["(default)"].swap and c.group_map()["(default)"].exclusive


def test_empty_config_is_legal() -> None:
    c = load_config_text("")
    assert c.models == {}
    assert c.group_map()["(default)"].members == []


def test_clamps_and_normalisation() -> None:
    c = load("healthCheckTimeout: 3\nlogLevel: ' DEBUG '\nmetricsMaxInMemory: 0\n")
    assert c.health_check_timeout == 15
    assert c.log_level == "debug"
    assert c.metrics_max_in_memory == 1000
    assert load("logLevel: loud\n").log_level == "info"


def test_log_to_stdout_enum() -> None:
    assert messages("logToStdout: everywhere\n") == [
        "logToStdout: logToStdout must be one of: proxy, upstream, both, none"
    ]
    assert load("logToStdout: both\n").log_to_stdout == "both"


def test_ports_sequential_in_sorted_order_only_for_port_users() -> None:
    c = load(
        """
        startPort: 9000
        models:
          zed: {cmd: "s --port ${PORT}"}
          alpha: {cmd: "s --port ${PORT}"}
          fixed: {cmd: "s --port 7000", proxy: "http://127.0.0.1:7000"}
          mid: {cmd: "s --port ${PORT}"}
        """
    )
    assert c.models["alpha"].cmd == "s --port 9000"
    assert c.models["mid"].proxy == "http://localhost:9001"
    assert c.models["zed"].proxy == "http://localhost:9002"
    assert c.models["fixed"].proxy == "http://127.0.0.1:7000"


def test_start_port_invalid() -> None:
    assert ConfigProblem("startPort", "startPort must be greater than 1") in problems(
        "startPort: 0\n"
    )
    assert problems("startPort: abc\n")[0].path == "startPort"


def test_proxy_required_without_port_in_cmd() -> None:
    assert problems("models:\n  m:\n    cmd: server\n") == [
        ConfigProblem(
            "models.m.proxy",
            "model m: proxy uses ${PORT} but cmd does not - ${PORT} is only available when "
            "used in cmd",
        )
    ]


def test_invalid_proxy_url() -> None:
    (p,) = problems("models:\n  m: {cmd: x, proxy: 'http://[::1'}\n")
    assert p.path == "models.m.proxy"
    assert p.message.startswith("model m: invalid proxy URL: ")


def test_duplicate_alias() -> None:
    assert problems(
        """
        models:
          a: {cmd: "s ${PORT}", aliases: [x]}
          b: {cmd: "s ${PORT}", aliases: [x]}
        """
    ) == [ConfigProblem("models.b.aliases", "duplicate alias x found in model: b")]


def test_resolve_model() -> None:
    c = load("models:\n  a: {cmd: 's ${PORT}', aliases: [x, y]}\n  b: {cmd: 's ${PORT}'}\n")
    assert [c.resolve_model(n) for n in ("a", "x", "y", "b", "zz")] == ["a", "a", "a", "b", None]


def test_api_keys() -> None:
    assert load("apiKeys: [k1, k2]\n").api_keys == ["k1", "k2"]
    assert problems("apiKeys: ['', 'has space', ok]\n") == [
        ConfigProblem("apiKeys[0]", "empty api key found in apiKeys"),
        ConfigProblem("apiKeys[1]", "api key cannot contain spaces"),
    ]


def test_api_keys_from_env() -> None:
    c = load('apiKeys: ["${env.K1}", "${env.K2}"]\n', {"K1": "a", "K2": "b"})
    assert c.api_keys == ["a", "b"]
    assert messages('apiKeys: ["${env.K1}"]\n', {"K1": ""}) == [
        "apiKeys[0]: empty api key found in apiKeys"
    ]
    assert messages('apiKeys: ["${env.MISSING}"]\n') == [
        "apiKeys[0]: environment variable 'MISSING' is not set"
    ]


def test_global_ttl() -> None:
    c = load(
        """
        globalTTL: 300
        models:
          dflt: {cmd: "s ${PORT}"}
          never: {cmd: "s ${PORT}", ttl: 0}
          own: {cmd: "s ${PORT}", ttl: 60}
          sentinel: {cmd: "s ${PORT}", ttl: -1}
        """
    )
    assert {k: m.ttl for k, m in c.models.items()} == {
        "dflt": 300,
        "never": 0,
        "own": 60,
        "sentinel": 300,
    }
    assert messages("globalTTL: -1\n") == ["globalTTL: globalTTL must be >= 0"]
    assert messages("models:\n  m: {cmd: 's ${PORT}', ttl: -5}\n") == [
        "models.m.ttl: model m: invalid TTL value -5"
    ]


def test_unload_timeout() -> None:
    c = load(
        """
        models:
          a: {cmd: "s ${PORT}"}
          b: {cmd: "s ${PORT}", unloadTimeout: 3}
          c: {cmd: "s ${PORT}", unloadTimeout: 0}
        """
    )
    assert [c.models[k].unload_timeout for k in "abc"] == [10, 3, 10]
    c = load("unloadTimeout: 20\nmodels:\n  a: {cmd: 's ${PORT}'}\n")
    assert (c.unload_timeout, c.models["a"].unload_timeout) == (20, 20)
    assert load("unloadTimeout: 0\n").unload_timeout == 10
    assert problems("unloadTimeout: -1\nmodels:\n  a: {cmd: 's ${PORT}', unloadTimeout: -2}\n") == [
        ConfigProblem("unloadTimeout", "unloadTimeout must be >= 0"),
        ConfigProblem("models.a.unloadTimeout", "model a: unloadTimeout must be >= 0"),
    ]


def test_send_loading_state_inheritance() -> None:
    c = load(
        """
        sendLoadingState: true
        models:
          a: {cmd: "s ${PORT}"}
          b: {cmd: "s ${PORT}", sendLoadingState: false}
          c: {cmd: "s ${PORT}", sendLoadingState: null}
        """
    )
    assert [c.models[k].send_loading_state for k in "abc"] == [True, False, True]


def test_concurrency_limit() -> None:
    c = load("models:\n  a: {cmd: 's ${PORT}', concurrencyLimit: 3}\n  b: {cmd: 's ${PORT}'}\n")
    assert (c.models["a"].concurrency_limit, c.models["b"].concurrency_limit) == (3, 10)


def test_timeouts_parse_and_zero_allowed() -> None:
    c = load(
        """
        models:
          a:
            cmd: "s ${PORT}"
            timeouts: {connect: 0, responseHeader: 5, idleConn: 1}
        """
    )
    t = c.models["a"].timeouts
    assert (t.connect, t.response_header, t.idle_conn, t.keepalive) == (0, 5, 1, 30)


def test_type_errors_name_yaml_paths_and_are_collected() -> None:
    got = problems(
        """
        healthCheckTimeout: soon
        models:
          a: {cmd: "s ${PORT}", ttl: forever, aliases: [[1]]}
        """
    )
    assert [p.path for p in got] == ["healthCheckTimeout", "models.a.ttl", "models.a.aliases[0]"]


def test_unknown_keys_ignored_and_anchors_usable() -> None:
    c = load(
        """
        defs:
          base: &base
            cmd: "s --port ${PORT} -m ${MODEL_ID}"
            ttl: 30
        models:
          a: *base
          b:
            <<: *base
            ttl: 5
        nonsense: 1
        """
    )
    assert c.models["a"].cmd == "s --port 5800 -m a"
    assert (c.models["b"].cmd, c.models["b"].ttl) == ("s --port 5801 -m b", 5)


def test_comments_stripped_from_cmd_only_full_lines() -> None:
    c = load(
        """
        models:
          a:
            cmd: |
              server --port ${PORT}
                # --flag-commented ${UNDEFINED}
              --keep # trailing stays
            cmdStop: |
              # comment
              kill ${PID}
        """
    )
    assert c.models["a"].cmd == "server --port 5800\n--keep # trailing stays\n"
    assert c.models["a"].cmd_stop == "kill ${PID}\n"


def test_capabilities_and_compat() -> None:
    c = load(
        """
        models:
          a:
            cmd: "s ${PORT}"
            compat: {ignoreWebsockets: true}
            capabilities: {in: [text, image], out: [text], tools: true, context: 8192}
        """
    )
    caps = c.models["a"].capabilities
    assert (caps.inputs, caps.out, caps.tools, caps.context) == (
        ["text", "image"],
        ["text"],
        True,
        8192,
    )
    assert c.models["a"].compat.ignore_websockets
    assert messages(
        "models:\n  a: {cmd: 's ${PORT}', capabilities: {in: [smell], context: -1}}\n"
    ) == [
        'models.a.capabilities.in: model a: capabilities.in: invalid modality "smell", '
        "must be one of: text, audio, image",
        "models.a.capabilities.context: model a: capabilities.context: must be >= 0",
    ]


def test_preload_normalised() -> None:
    c = load(
        """
        models:
          a: {cmd: "s ${PORT}", aliases: [al]}
          b: {cmd: "s ${PORT}"}
        hooks:
          on_startup:
            preload: [" al ", "", "unknown", b, a]
        """
    )
    assert c.hooks.on_startup.preload == ["a", "b"]


def test_upstream_ignore_paths() -> None:
    assert load("upstream: {ignorePaths: []}\n").upstream.ignore_paths == list(DEFAULT_IGNORE_PATHS)
    assert load("upstream: {ignorePaths: ['^/x$']}\n").upstream.ignore_paths == ["^/x$"]
    (p,) = problems("upstream: {ignorePaths: ['(']}\n")
    assert p.path == "upstream.ignorePaths"
    assert p.message.startswith('invalid regular expression "(": ')


def test_performance_every() -> None:
    assert load("performance: {every: 1m30s}\n").performance.every == "1m30s"
    assert load("performance: {disabled: true}\n").performance.disabled
    assert messages("performance: {every: 2s}\n") == [
        "performance.every: performance: every must be at least 5s, got 2s"
    ]


def test_ui_session_ids_normalised() -> None:
    c = load("ui: {activity: {session_id: [' X-A ', '', x-a, X-B]}}\n")
    assert c.ui.activity.session_id == ["X-A", "X-B"]
    assert load("ui: {activity: {session_id: []}}\n").ui.activity.session_id == []


def test_store_path() -> None:
    assert messages("store: {path: ''}\n") == ["store.path: store.path must not be empty"]
    assert load("store: {}\n").store.path is None


def test_several_problems_reported_together() -> None:
    got = messages(
        """
        globalTTL: -1
        logToStdout: nope
        models:
          a: {cmd: "s ${PORT}", ttl: -3}
        """
    )
    assert len(got) == 3


def test_recursive_anchor_is_refused_at_its_path() -> None:
    # Was a RecursionError: every walk of the tree followed the alias forever.
    assert messages("x: &a [1, *a]\n") == [
        "x[1]: value contains itself (an alias inside its own anchor)"
    ]
    assert messages("models:\n  m: &m {cmd: s, metadata: {self: *m}}\n") == [
        "models.m.metadata.self: value contains itself (an alias inside its own anchor)"
    ]


def test_alias_expansion_is_bounded() -> None:
    # "Billion laughs": eight lines standing for 10**8 values hung the macro pass.
    lines = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 8)]
    (problem,) = problems("\n".join(lines) + "\n")
    assert problem.path.startswith("l")
    assert "excessive aliasing" in problem.message
    # Sharing an anchor a few times is fine.
    assert load("a: &a [1, 2]\nb: [*a, *a, *a]\n").models == {}


def test_deep_nesting_is_refused() -> None:
    # Was a RecursionError from the macro and env passes (libyaml itself allows 1000 levels).
    (problem,) = problems("models:\n  m:\n    metadata: " + "[" * 500 + "]" * 500 + "\n")
    assert problem.path.startswith("models.m.metadata[0]")
    assert problem.message == "nesting deeper than 100 levels"


def test_metadata_holds_only_json_values() -> None:
    # A date in metadata is a string (a `datetime.date` made GET /v1/models a 500), written
    # as llama-swap writes its time.Time (checked against the Go build). Tags making non-JSON
    # values are refused at their path.
    c = load("models:\n  m: {cmd: s, proxy: 'http://h:1', metadata: {released: 2024-01-05}}\n")
    assert c.models["m"].metadata == {"released": "2024-01-05T00:00:00Z"}
    assert messages("models:\n  m: {cmd: s, metadata: {b: !!binary aGk=}}\n") == [
        "models.m.metadata.b: unsupported value of type bytes (only strings, numbers, "
        "booleans, null, sequences and mappings)"
    ]
    assert [p.path for p in problems("a: !!set {x}\n")] == ["a"]
