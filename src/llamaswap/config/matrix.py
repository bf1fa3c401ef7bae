"""The matrix: a DSL saying which models may run together, and the solver that uses it. Pure.

Grammar (`&` binds tighter than `|`)::

    expr := and ('|' and)*
    and  := atom ('&' atom)*
    atom := IDENT | '+' IDENT | '(' expr ')'

An identifier is a var (tried first) or a model ID; `+name` is the expansion of another set.
A set expands to alternatives, each a set of models allowed to run together.

The solver never expands sets. For a query (target T, running R) it projects every alternative
onto the models that matter, {T} ∪ R, as a bitmask: `|` unions the alternatives of its
branches, `&` takes pairwise unions, and only maximal masks are kept (a superset evicts fewer
models, so it is never worse). Each set's states are memoised per query, so shared `+refs`
are solved once and the work is bounded by the running models, not by the expansion size.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from itertools import product

from llamaswap.config.model import MatrixConfig
from llamaswap.errors import ConfigError, ConfigProblem

VAR_KEY = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")
DEFAULT_EVICT_COST = 1


class DSLError(ValueError):
    """A set expression that does not tokenize or parse; the message is the spec's text."""


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "ref", "&", "|", "(", ")"
    value: str
    pos: int


@dataclass(frozen=True)
class Leaf:
    name: str


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


Node = Leaf | Ref | Or | And


def _is_ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_-."


def tokenize(expr: str) -> list[Token]:
    """Split a set expression into tokens; raises DSLError("tokenize: ...")."""
    tokens: list[Token] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in "&|()":
            tokens.append(Token(ch, ch, i))
            i += 1
        elif ch == "+" or _is_ident(ch):
            start = i + 1 if ch == "+" else i
            end = start
            while end < len(expr) and _is_ident(expr[end]):
                end += 1
            if end == start:
                raise DSLError(f"tokenize: expected set name after '+' at position {i}")
            tokens.append(Token("ref" if ch == "+" else "ident", expr[start:end], i))
            i = end
        else:
            raise DSLError(f"tokenize: unexpected character '{ch}' at position {i}")
    return tokens


def parse(expr: str) -> Node:
    """Parse a set expression into a tree; raises DSLError ("tokenize: ..." / "parse: ...")."""
    tokens = tokenize(expr)
    if not tokens:
        raise DSLError("parse: empty DSL expression")
    pos = 0

    def peek() -> Token | None:
        return tokens[pos] if pos < len(tokens) else None

    def binary(kind: str, operand: type[Or] | type[And]) -> Node:
        nonlocal pos
        items = [atom() if kind == "&" else binary("&", And)]
        while (tok := peek()) is not None and tok.kind == kind:
            pos += 1
            items.append(atom() if kind == "&" else binary("&", And))
        return items[0] if len(items) == 1 else operand(tuple(items))

    def atom() -> Node:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise DSLError('parse: unexpected token ""')
        pos += 1
        if tok.kind == "ident":
            return Leaf(tok.value)
        if tok.kind == "ref":
            return Ref(tok.value)
        if tok.kind == "(":
            inner = binary("|", Or)
            closing = peek()
            if closing is None or closing.kind != ")":
                raise DSLError("parse: missing closing parenthesis")
            pos += 1
            return inner
        raise DSLError(f'parse: unexpected token "{tok.value}"')

    node = binary("|", Or)
    if (extra := peek()) is not None:
        raise DSLError(f'parse: unexpected token "{extra.value}" after expression')
    return node


def refs(node: Node) -> list[str]:
    """Names of the sets `node` references with `+name`, in order of appearance."""
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Leaf):
        return []
    return [r for item in node.items for r in refs(item)]


@dataclass(frozen=True)
class MatrixDecision:
    """What the solver decided: stop `evict`; `target_set` may then run; from set `set_name`."""

    evict: frozenset[str]
    target_set: frozenset[str]
    set_name: str | None


# A query's state: bitmask over the relevant models -> one concrete witness combination.
_States = dict[int, frozenset[str]]


def _keep_maximal(pairs: Iterable[tuple[int, frozenset[str]]]) -> _States:
    out: _States = {}
    for mask, witness in pairs:
        if any(m | mask == m for m in out):
            continue  # equal to or inside a state already kept: never better
        for m in [m for m in out if m | mask == mask]:
            del out[m]
        out[mask] = witness
    return out


class CompiledMatrix:
    """A validated matrix: sets in tie-break order (dependencies first), costs per model ID."""

    def __init__(self, sets: list[tuple[str, Node]], costs: dict[str, int]) -> None:
        self.sets = sets  # identifiers already resolved to model IDs, refs to Ref nodes
        self.costs = costs
        self._by_name = dict(sets)

    @property
    def set_names(self) -> list[str]:
        return [name for name, _ in self.sets]

    def cost(self, model_id: str) -> int:
        return self.costs.get(model_id, DEFAULT_EVICT_COST)

    def _states(self, node: Node, bits: dict[str, int], memo: dict[str, _States]) -> _States:
        if isinstance(node, Leaf):
            return {bits.get(node.name, 0): frozenset({node.name})}
        if isinstance(node, Ref):
            if node.name not in memo:
                memo[node.name] = self._states(self._by_name[node.name], bits, memo)
            return memo[node.name]
        if isinstance(node, Or):
            return _keep_maximal(
                pair for item in node.items for pair in self._states(item, bits, memo).items()
            )
        acc: _States = {0: frozenset()}
        for item in node.items:
            child = self._states(item, bits, memo)
            acc = _keep_maximal(
                (a | b, wa | wb) for (a, wa), (b, wb) in product(acc.items(), child.items())
            )
        return acc

    def _each_state(self, models: Collection[str]) -> Iterable[tuple[str, int, frozenset[str]]]:
        """(set name, projected mask, witness) over all sets in order; bit i = sorted(models)[i]."""
        bits = {m: 1 << i for i, m in enumerate(sorted(models))}
        memo: dict[str, _States] = {}
        for name, _ in self.sets:
            states = self._states(Ref(name), bits, memo)
            for mask, witness in states.items():
                yield name, mask, witness

    def solve(self, target: str, running: frozenset[str]) -> MatrixDecision:
        """Which running models to stop so `target` can run (spec §4.3); never evicts `target`."""
        if target in running:
            full = (1 << len(running)) - 1
            for name, mask, witness in self._each_state(running):
                if mask == full:
                    return MatrixDecision(frozenset(), witness, name)
            return MatrixDecision(frozenset(), running, None)
        relevant = sorted(running | {target})
        target_bit = 1 << relevant.index(target)
        best: tuple[int, str, frozenset[str]] | None = None
        for name, mask, witness in self._each_state(relevant):
            if not mask & target_bit:
                continue
            cost = sum(self.cost(m) for m in running if m not in witness)
            if best is None or cost < best[0]:
                best = (cost, name, witness)
        if best is None:
            return MatrixDecision(running, frozenset({target}), None)
        _, name, witness = best
        return MatrixDecision(running - witness, witness, name)

    def can_coexist(self, models: Collection[str]) -> bool:
        """True when some set allows every one of `models` to run at the same time."""
        full = (1 << len(set(models))) - 1
        return any(mask == full for _, mask, _ in self._each_state(set(models)))

    def expand(self, set_name: str) -> list[tuple[str, ...]]:
        """Every combination of a set, in order (sorted, deduplicated). Grows fast: tests only."""
        return self._expand(self._by_name[set_name])

    def _expand(self, node: Node) -> list[tuple[str, ...]]:
        if isinstance(node, Leaf):
            return [(node.name,)]
        if isinstance(node, Ref):
            return self._expand(self._by_name[node.name])
        if isinstance(node, Or):
            combos = [c for item in node.items for c in self._expand(item)]
        else:
            combos = [()]
            for item in node.items:
                combos = [
                    tuple(sorted(set(a) | set(b))) for a, b in product(combos, self._expand(item))
                ]
        return list(dict.fromkeys(combos))


def _resolve(node: Node, names: dict[str, str], unknown: list[str]) -> Node:
    """Replace identifiers by model IDs (vars first); collect the unknown ones."""
    if isinstance(node, Leaf):
        if node.name not in names:
            unknown.append(node.name)
            return node
        return Leaf(names[node.name])
    if isinstance(node, Ref):
        return node
    items = tuple(_resolve(item, names, unknown) for item in node.items)
    return Or(items) if isinstance(node, Or) else And(items)


def _topological(graph: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Sets with their references first, otherwise in YAML order; plus sets closing a cycle."""
    order: list[str] = []
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str) -> None:
        state[name] = 1
        for ref in graph[name]:
            if state.get(ref) == 1:
                if ref not in cycles:
                    cycles.append(ref)
            elif ref in graph and ref not in state:
                visit(ref)
        state[name] = 2
        order.append(name)

    for name in graph:
        if name not in state:
            visit(name)
    return order, cycles


def compile_matrix(
    matrix: MatrixConfig, model_ids: Collection[str], path: str = "matrix"
) -> CompiledMatrix:
    """Validate a matrix against the configured model IDs and compile it for solving.

    Raises ConfigError listing every problem, each at a `matrix.*` path (or under `path`).
    """
    problems: list[ConfigProblem] = []

    def bad(where: str, message: str) -> None:
        problems.append(ConfigProblem(f"{path}.{where}" if where else path, f"matrix: {message}"))

    names = {m: m for m in model_ids}
    for key, model in matrix.vars.items():
        if not VAR_KEY.match(key):
            bad(
                f"vars.{key}",
                f"var key \"{key}\" must contain only alphanumeric, '-' or '.' characters "
                "and be 1-32 characters long",
            )
        elif model not in model_ids:
            bad(f"vars.{key}", f'var key "{key}" references unknown model "{model}"')
        else:
            names[key] = model  # a var wins over a model ID of the same name
    costs: dict[str, int] = {}
    for key, value in matrix.evict_costs.items():
        if value <= 0:
            bad(
                f"evict_costs.{key}",
                f'evict_cost for "{key}" must be a positive integer, got {value}',
            )
        elif key not in names:
            bad(f"evict_costs.{key}", f'evict_costs: unknown var or model "{key}"')
        else:
            costs[names[key]] = value
    if not matrix.sets:
        bad("sets", "matrix must define at least one set")
    parsed: dict[str, Node] = {}
    for name, expr in matrix.sets.items():
        try:
            parsed[name] = parse(expr)
        except DSLError as exc:
            bad(f"sets.{name}", f'set "{name}": {exc}')
    graph: dict[str, list[str]] = {}
    for name, node in parsed.items():
        graph[name] = refs(node)
        for ref in dict.fromkeys(graph[name]):
            if ref not in matrix.sets:
                bad(f"sets.{name}", f'set "{name}" references undefined set "{ref}"')
    order, cycles = _topological(graph)
    for name in cycles:
        bad(f"sets.{name}", f'circular reference detected involving set "{name}"')
    compiled: list[tuple[str, Node]] = []
    for name in order:
        unknown: list[str] = []
        compiled.append((name, _resolve(parsed[name], names, unknown)))
        for ident in dict.fromkeys(unknown):
            bad(f"sets.{name}", f'set "{name}": unknown var or model "{ident}"')
    if problems:
        raise ConfigError(problems)
    return CompiledMatrix(compiled, costs)
