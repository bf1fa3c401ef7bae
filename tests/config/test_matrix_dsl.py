"""Matrix DSL: tokenizer, parser, expansion, and fuzzing (spec §2.6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.config.matrix import (
    And,
    DSLError,
    Leaf,
    Or,
    Ref,
    Token,
    compile_matrix,
    parse,
    refs,
    tokenize,
)
from llamaswap.config.model import MatrixConfig
from llamaswap.errors import ConfigError

MODELS = ["a", "b", "c", "d", "g", "q", "m", "v", "model.x-1"]


def test_tokenizer() -> None:
    assert tokenize(" (a|b) & +set_1 & é.x-y_z ") == [
        Token("(", "(", 1),
        Token("ident", "a", 2),
        Token("|", "|", 3),
        Token("ident", "b", 4),
        Token(")", ")", 5),
        Token("&", "&", 7),
        Token("ref", "set_1", 9),
        Token("&", "&", 16),
        Token("ident", "é.x-y_z", 18),
    ]


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("a * b", "tokenize: unexpected character '*' at position 2"),
        ("a & + b", "tokenize: expected set name after '+' at position 4"),
        ("", "parse: empty DSL expression"),
        ("   ", "parse: empty DSL expression"),
        ("(a | b", "parse: missing closing parenthesis"),
        ("()", 'parse: unexpected token ")"'),
        (") a", 'parse: unexpected token ")"'),
        ("a b", 'parse: unexpected token "b" after expression'),
        ("a | b)", 'parse: unexpected token ")" after expression'),
        ("a &", 'parse: unexpected token ""'),
    ],
)
def test_parse_errors(expr: str, error: str) -> None:
    with pytest.raises(DSLError) as info:
        parse(expr)
    assert str(info.value) == error


def test_and_binds_tighter_than_or() -> None:
    assert parse("a | b & c") == Or((Leaf("a"), And((Leaf("b"), Leaf("c")))))
    assert parse("a & b | c") == Or((And((Leaf("a"), Leaf("b"))), Leaf("c")))
    assert refs(parse("+x & (+y | a) & +x")) == ["x", "y", "x"]
    assert parse("+s") == Ref("s")


def expand(sets: dict[str, str], name: str) -> list[tuple[str, ...]]:
    compiled = compile_matrix(MatrixConfig(sets=sets), MODELS)
    return compiled.expand(name)


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("a", [("a",)]),
        ("a & b", [("a", "b")]),
        ("a | b", [("a",), ("b",)]),
        ("(a|b)&(c|d)", [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]),
        ("a | b & c", [("a",), ("b", "c")]),
        ("a & a", [("a",)]),
        ("b & a", [("a", "b")]),
        ("(a|b) & a", [("a",), ("a", "b")]),
    ],
)
def test_expansion(expr: str, want: list[tuple[str, ...]]) -> None:
    assert expand({"s": expr}, "s") == want


def test_expansion_with_references() -> None:
    sets = {"combo": "+llms & v", "llms": "g | q | m", "chain": "+combo | a"}
    assert expand(sets, "combo") == [("g", "v"), ("q", "v"), ("m", "v")]
    assert expand(sets, "chain") == [("g", "v"), ("q", "v"), ("m", "v"), ("a",)]


def test_no_expansion_cap_when_solving() -> None:
    # 10 sets of 10 alternatives each multiplied together: 10^10 combinations, never expanded.
    models = [f"m{i}" for i in range(100)]
    ors = [" | ".join(models[i * 10 : i * 10 + 10]) for i in range(10)]
    expr = " & ".join(f"({o})" for o in ors)
    compiled = compile_matrix(MatrixConfig(sets={"huge": expr}), models)
    running = frozenset({"m0", "m11", "m22"})
    decision = compiled.solve("m35", running)
    assert decision.evict == frozenset()
    assert {"m0", "m11", "m22", "m35"} <= decision.target_set
    assert len(decision.target_set) == 10


def test_more_than_64_relevant_models() -> None:
    models = [f"m{i}" for i in range(80)]
    expr = " & ".join(models[:79])
    compiled = compile_matrix(MatrixConfig(sets={"all": expr}), models)
    running = frozenset(models[:78])
    assert compiled.solve("m78", running).evict == frozenset()
    assert compiled.solve("m79", running).evict == running


# --- fuzzing ------------------------------------------------------------------------------------

_alphabet = st.sampled_from(list("ab+&|() .-_*x1é"))


@settings(max_examples=300, deadline=None)
@given(st.text(_alphabet, max_size=24))
def test_random_text_only_raises_config_error(expr: str) -> None:
    try:
        compile_matrix(MatrixConfig(sets={"s": expr, "x": "a"}), ["a", "b"])
    except ConfigError as exc:
        assert all(p.path.startswith("matrix.sets.") for p in exc.problems)


def _expr(names: list[str]) -> st.SearchStrategy[str]:
    leaf = st.sampled_from(names)
    return st.recursive(
        leaf,
        lambda inner: st.tuples(inner, st.sampled_from(["&", "|"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        max_leaves=8,
    )


_names = ["a", "b", "c", "d", "e"]


@settings(max_examples=200, deadline=None)
@given(
    sets=st.lists(_expr(_names), min_size=1, max_size=4),
    target=st.sampled_from(_names),
    running=st.frozensets(st.sampled_from(_names)),
)
def test_solver_never_evicts_target_and_result_fits_a_set(
    sets: list[str], target: str, running: frozenset[str]
) -> None:
    compiled = compile_matrix(MatrixConfig(sets={f"s{i}": e for i, e in enumerate(sets)}), _names)
    decision = compiled.solve(target, running)
    assert target not in decision.evict
    assert decision.evict <= running
    staying = (running - decision.evict) | {target}
    if target in running:
        assert decision.evict == frozenset()
    elif decision.set_name is None:
        assert decision.evict == running  # runs alone
    else:
        combos = [set(c) for name in compiled.set_names for c in compiled.expand(name)]
        assert any(staying <= c for c in combos)
        # optimal: no combination containing the target keeps strictly more cost
        best = min(sum(compiled.cost(m) for m in running - c) for c in combos if target in c)
        assert sum(compiled.cost(m) for m in decision.evict) == best
