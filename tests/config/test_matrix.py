"""Matrix config validation and the §4.3 solver, including the spec's worked examples."""

from __future__ import annotations

import pytest

from llamaswap.config.matrix import MatrixDecision, compile_matrix
from llamaswap.config.model import MatrixConfig
from llamaswap.errors import ConfigError, ConfigProblem

from ._helpers import load, messages, problems

IDS = ["gemma", "qwen", "mistral", "voxtral", "embed", "sdxl", "llama70"]
VARS = {"g": "gemma", "q": "qwen", "m": "mistral", "v": "voxtral", "e": "embed"}
VARS |= {"sd": "sdxl", "L": "llama70"}
WORKED = MatrixConfig(
    vars=VARS,
    evict_costs={"v": 50, "L": 30},
    sets={
        "standard": "(g|q|m)&v",
        "with_rerank": "(g|q)&v&e",
        "creative": "(g|q)&sd",
        "full": "L",
    },
)


def solve(target: str, *running: str, matrix: MatrixConfig = WORKED) -> MatrixDecision:
    return compile_matrix(matrix, IDS).solve(target, frozenset(running))


def test_worked_examples() -> None:
    d = solve("qwen", "gemma", "voxtral")
    assert d == MatrixDecision(frozenset({"gemma"}), frozenset({"qwen", "voxtral"}), "standard")
    assert solve("llama70", "gemma", "voxtral").evict == {"gemma", "voxtral"}
    d = solve("sdxl", "gemma", "voxtral")
    assert (d.evict, d.target_set, d.set_name) == ({"voxtral"}, {"gemma", "sdxl"}, "creative")
    d = solve("gemma", "embed", "qwen", "voxtral")
    assert (d.evict, d.target_set) == ({"qwen"}, {"embed", "gemma", "voxtral"})
    two = MatrixConfig(vars=VARS, evict_costs={"v": 50}, sets={"s1": "g&v", "s2": "g&m"})
    assert solve("gemma", "voxtral", "mistral", matrix=two).evict == {"mistral"}


def test_already_running_evicts_nothing_and_names_set() -> None:
    d = solve("gemma", "gemma", "voxtral")
    assert d == MatrixDecision(frozenset(), frozenset({"gemma", "voxtral"}), "standard")
    d = solve("gemma", "gemma", "sdxl", "llama70")  # matches no set: still nothing evicted
    assert (d.evict, d.set_name) == (frozenset(), None)


def test_not_in_any_set_runs_alone() -> None:
    only = MatrixConfig(vars=VARS, sets={"s": "g&v"})
    assert solve("embed", "gemma", "voxtral", matrix=only) == MatrixDecision(
        frozenset({"gemma", "voxtral"}), frozenset({"embed"}), None
    )
    assert solve("embed", matrix=only).evict == frozenset()


def test_nothing_running_picks_first_set() -> None:
    assert solve("gemma") == MatrixDecision(
        frozenset(), frozenset({"gemma", "voxtral"}), "standard"
    )


def test_single_set_evicts_non_members() -> None:
    one = MatrixConfig(vars=VARS, sets={"s": "g&v"})
    assert solve("gemma", "voxtral", "embed", matrix=one).evict == {"embed"}


def test_tie_breaking_by_topological_set_order() -> None:
    m = MatrixConfig(vars=VARS, sets={"late": "+early | q&m", "early": "g&v", "other": "g&e"})
    c = compile_matrix(m, IDS)
    assert c.set_names == ["early", "late", "other"]
    # running {voxtral, embed}, target gemma: early keeps voxtral, other keeps embed: cost tie.
    assert c.solve("gemma", frozenset({"voxtral", "embed"})).set_name == "early"


def test_evict_cost_preserves_expensive() -> None:
    m = MatrixConfig(vars=VARS, evict_costs={"e": 5}, sets={"a": "g&v", "b": "g&e"})
    assert compile_matrix(m, IDS).solve("gemma", frozenset({"voxtral", "embed"})).set_name == "b"


def test_load_from_config_legacy_and_routing() -> None:
    text = """
        models:
          a: {cmd: "s ${PORT}"}
          b: {cmd: "s ${PORT}"}
          c: {cmd: "s ${PORT}"}
        %s
        """
    legacy = load(text % "matrix:\n          vars: {x: a}\n          sets: {s: 'x & b'}")
    assert legacy.uses_matrix()
    assert legacy.group_map() == {}
    compiled = legacy.compiled_matrix()
    assert compiled is not None
    assert compiled.expand("s") == [("a", "b")]
    routed = load(
        text % "routing:\n          router:\n            use: matrix\n            settings:\n"
        "              matrix: {sets: {s: 'a & c'}}"
    )
    assert routed.compiled_matrix() is not None
    assert routed.compiled_matrix().solve("a", frozenset({"c", "b"})).evict == {"b"}  # type: ignore[union-attr]


def _matrix_problems(matrix: str, ids: str = "a, b") -> list[ConfigProblem]:
    models = "".join(f"\n  {i}: {{cmd: 's ${{PORT}}'}}" for i in ids.split(", "))
    return problems(f"models:{models}\nmatrix:\n{matrix}")


def test_var_validation() -> None:
    assert _matrix_problems(
        "  vars: {'bad_key': a, ok.key-1: a, ghost: nope, " + "x" * 33 + ": a}\n  sets: {s: a}\n"
    ) == [
        ConfigProblem(
            "matrix.vars.bad_key",
            "matrix: var key \"bad_key\" must contain only alphanumeric, '-' or '.' characters "
            "and be 1-32 characters long",
        ),
        ConfigProblem(
            "matrix.vars.ghost", 'matrix: var key "ghost" references unknown model "nope"'
        ),
        ConfigProblem(
            "matrix.vars." + "x" * 33,
            f"matrix: var key \"{'x' * 33}\" must contain only alphanumeric, '-' or '.' "
            "characters and be 1-32 characters long",
        ),
    ]
    assert _matrix_problems("  vars: {'': a}\n  sets: {s: a}\n")[0].path == "matrix.vars."


def test_vars_optional_model_ids_direct_and_var_precedence() -> None:
    c = compile_matrix(MatrixConfig(vars={"a": "b"}, sets={"s": "a & c"}), ["a", "b", "c"])
    assert c.expand("s") == [("b", "c")]  # var a wins over model a
    c = compile_matrix(MatrixConfig(vars={"x": "a"}, sets={"s": "x & a"}), ["a"])
    assert c.expand("s") == [("a",)]  # dedupe after resolution


def test_evict_costs_validation_and_model_names() -> None:
    got = _matrix_problems(
        "  vars: {x: a}\n  evict_costs: {x: 0, b: -2, zz: 3, a: 4}\n  sets: {s: a}\n"
    )
    assert [str(p) for p in got] == [
        'matrix.evict_costs.x: matrix: evict_cost for "x" must be a positive integer, got 0',
        'matrix.evict_costs.b: matrix: evict_cost for "b" must be a positive integer, got -2',
        'matrix.evict_costs.zz: matrix: evict_costs: unknown var or model "zz"',
    ]
    c = compile_matrix(MatrixConfig(evict_costs={"a": 7}, sets={"s": "a"}), ["a"])
    assert (c.cost("a"), c.cost("b")) == (7, 1)


def test_set_errors() -> None:
    got = _matrix_problems(
        "  sets:\n    s1: '+s2 & a'\n    s2: '+s1'\n    s3: '+nope'\n    s4: 'a & who'\n"
        "    s5: 'a *'\n    s6: '(a'\n"
    )
    assert [str(p) for p in got] == [
        "matrix.sets.s5: matrix: set \"s5\": tokenize: unexpected character '*' at position 2",
        'matrix.sets.s6: matrix: set "s6": parse: missing closing parenthesis',
        'matrix.sets.s3: matrix: set "s3" references undefined set "nope"',
        'matrix.sets.s1: matrix: circular reference detected involving set "s1"',
        'matrix.sets.s4: matrix: set "s4": unknown var or model "who"',
    ]


def test_no_sets() -> None:
    assert [str(p) for p in _matrix_problems("  vars: {x: a}\n")] == [
        "matrix.sets: matrix: matrix must define at least one set"
    ]


def test_routing_paths_in_matrix_errors() -> None:
    assert messages(
        """
        models:
          a: {cmd: "s ${PORT}"}
        routing:
          router:
            use: matrix
            settings:
              matrix: {sets: {s: "who"}}
        """
    ) == ['routing.router.settings.matrix.sets.s: matrix: set "s": unknown var or model "who"']


def test_compile_matrix_raises_config_error_directly() -> None:
    with pytest.raises(ConfigError) as info:
        compile_matrix(MatrixConfig(sets={"s": "x"}), ["a"], path="m")
    assert info.value.problems == [
        ConfigProblem("m.sets.s", 'matrix: set "s": unknown var or model "x"')
    ]


def test_can_coexist() -> None:
    c = compile_matrix(WORKED, IDS)
    assert c.can_coexist(["gemma", "voxtral", "embed"])
    assert not c.can_coexist(["gemma", "llama70"])
