"""A recorder around the pure scheduler, and small policy builders, for the swap tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llamaswap.config.matrix import CompiledMatrix, compile_matrix
from llamaswap.config.model import MatrixConfig
from llamaswap.swap.effects import (
    Effect,
    Grant,
    QueuePosition,
    Reject,
    StartSwap,
    StopModels,
)
from llamaswap.swap.policy import EvictionPolicy, GroupPolicy, MatrixPolicy
from llamaswap.swap.residency import Residency
from llamaswap.swap.rules import SchedulerSettings
from llamaswap.swap.scheduler import ModelRules, Phase, Scheduler


@dataclass(frozen=True)
class Group:
    """A group definition as the policy reads it (llama-swap defaults: swap and exclusive)."""

    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


def group_policy(**groups: Group) -> GroupPolicy:
    return GroupPolicy(groups)


def compiled(
    models: Iterable[str],
    sets: Mapping[str, str],
    costs: Mapping[str, int] | None = None,
    variables: Mapping[str, str] | None = None,
) -> CompiledMatrix:
    config = MatrixConfig(
        vars=dict(variables or {}), evict_costs=dict(costs or {}), sets=dict(sets)
    )
    return compile_matrix(config, list(models))


def matrix_policy(matrix: CompiledMatrix) -> MatrixPolicy:
    return MatrixPolicy(lambda target, running: matrix.solve(target, running).evict)


class Harness:
    """Drives a Scheduler with a fake clock; every call returns (and logs) its effects."""

    def __init__(
        self,
        policy: EvictionPolicy,
        models: Iterable[str] | Mapping[str, ModelRules],
        settings: SchedulerSettings | None = None,
        residency: Residency | None = None,
    ) -> None:
        rules = dict(models) if isinstance(models, Mapping) else {m: ModelRules() for m in models}
        self.scheduler = Scheduler(rules, policy, settings, residency=residency)
        self.now = 0.0
        self.log: list[Effect] = []

    def _record(self, effects: list[Effect]) -> list[Effect]:
        self.log.extend(effects)
        return effects

    def request(self, request_id: int, model: str) -> list[Effect]:
        return self._record(self.scheduler.on_request(request_id, model, self.now))

    def swap_done(
        self, swap_id: int, error: str | None = None, load_time: float | None = None
    ) -> list[Effect]:
        return self._record(self.scheduler.on_swap_done(swap_id, error, self.now, load_time))

    def served(self, request_id: int) -> list[Effect]:
        return self._record(self.scheduler.on_served(request_id, self.now))

    def cancel(self, request_id: int) -> list[Effect]:
        return self._record(self.scheduler.on_cancel(request_id, self.now))

    def stopped(self, model: str) -> list[Effect]:
        return self._record(self.scheduler.on_stopped(model, self.now))

    def exited(self, model: str) -> list[Effect]:
        return self._record(self.scheduler.on_exited(model, self.now))

    def unload(self, models: Iterable[str] | None = None) -> list[Effect]:
        targets = None if models is None else list(models)
        return self._record(self.scheduler.on_unload(targets, self.now))

    def tick(self, now: float) -> list[Effect]:
        self.now = now
        return self._record(self.scheduler.on_tick(now))

    def shutdown(self) -> list[Effect]:
        return self._record(self.scheduler.on_shutdown())

    def phase(self, model: str) -> Phase:
        return self.scheduler.phase(model)

    def outcomes(self, request_id: int) -> list[Grant | Reject]:
        return [e for e in self.log if isinstance(e, Grant | Reject) and e.request_id == request_id]

    def all_swaps(self) -> list[StartSwap]:
        return swaps(self.log)


def grants(effects: Iterable[Effect]) -> list[int]:
    return [e.request_id for e in effects if isinstance(e, Grant)]


def rejects(effects: Iterable[Effect]) -> dict[int, Reject]:
    return {e.request_id: e for e in effects if isinstance(e, Reject)}


def swaps(effects: Iterable[Effect]) -> list[StartSwap]:
    return [e for e in effects if isinstance(e, StartSwap)]


def stops(effects: Iterable[Effect]) -> list[StopModels]:
    return [e for e in effects if isinstance(e, StopModels)]


def positions(effects: Iterable[Effect]) -> dict[int, int]:
    return {e.request_id: e.position for e in effects if isinstance(e, QueuePosition)}


def only_swap(effects: Iterable[Effect]) -> StartSwap:
    found = swaps(effects)
    assert len(found) == 1, found
    return found[0]
