"""Eviction policies: which running models must stop so that a target can run. Pure.

Group policy (llama-swap §4.1): `swap` evicts same-group siblings; `exclusive` evicts members of
every other group that is not `persistent`. Matrix policy (§4.3): the cheapest allowed set that
contains the target, by evict cost, ties by set order; a target in no set runs alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol


class EvictionPolicy(Protocol):
    """Decides which of the `running` models must be stopped before `target` may run."""

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]: ...


class GroupRules(Protocol):
    """The parts of a group definition the policy reads."""

    @property
    def swap(self) -> bool: ...
    @property
    def exclusive(self) -> bool: ...
    @property
    def persistent(self) -> bool: ...
    @property
    def members(self) -> Collection[str]: ...


@dataclass(frozen=True)
class _Group:
    name: str
    swap: bool
    exclusive: bool
    persistent: bool
    members: frozenset[str]


class GroupPolicy:
    """Group semantics. A model in no group behaves as a member of its own exclusive group."""

    def __init__(self, groups: Mapping[str, GroupRules]) -> None:
        self._groups = [
            _Group(name, g.swap, g.exclusive, g.persistent, frozenset(g.members))
            for name, g in groups.items()
        ]
        self._group_of = {m: g for g in self._groups for m in g.members}

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        others = running - {target}
        group = self._group_of.get(target) or _Group(target, True, True, False, frozenset())
        evict: set[str] = set()
        if group.swap:
            evict |= others & group.members
        if group.exclusive:
            for other in self._groups:
                if other is not group and not other.persistent:
                    evict |= others & other.members
            # Each ungrouped model is its own (non-persistent) group.
            evict |= {m for m in others if m not in self._group_of}
        return frozenset(evict)


class MatrixPolicy:
    """Matrix semantics, delegating the search to a solver (`CompiledMatrix.solve(...).evict`)."""

    def __init__(self, solve: Callable[[str, frozenset[str]], frozenset[str]]) -> None:
        self._solve = solve

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        if target in running:
            return frozenset()
        return self._solve(target, running) & running
