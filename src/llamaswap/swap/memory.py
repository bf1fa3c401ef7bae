"""Placement's inputs from config and measurements, and the host-memory plan for sleep. Pure.

* `need_for`: a model's `Need` from its declared `resources`, else from a GGUF estimate.
* `placed_needs`: the models placed by memory (no group, no matrix deciding for them).
* `sleep_hosts`: the host memory each model that can sleep holds asleep.
* `device_capacities`: declared `devices`, else the detected cards named `gpu<index>`.
* `resident_usage`: what placement counts for a loaded model per device, max(declared,
  measured), so a model that uses more than it said is not packed too tightly again.
* `host_plan`: which sleeping models to stop so that one more fits in `hostMemory`; it is
  `place` on one "device", the host, so the same cheapest-set rule applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from llamaswap.config.model import Config, ModelConfig
from llamaswap.config.resources import DeviceConfig
from llamaswap.swap.placement import Fit, Need, Resident, place

__all__ = [
    "HOST",
    "Sleeper",
    "device_capacities",
    "host_plan",
    "need_for",
    "placed_needs",
    "resident_usage",
    "sleep_hosts",
]

HOST = "host"


def need_for(model: ModelConfig, estimate: int | None = None) -> Need | None:
    """The model's need: declared `resources` first, else `estimate` bytes on any one device;
    None when there is neither (the model is not placed by memory)."""
    r = model.resources
    if r is not None:
        memory = dict(r.memory) if isinstance(r.memory, dict) else r.memory
        return Need(memory, tuple(r.devices))
    return Need(estimate) if estimate is not None else None


def placed_needs(config: Config, estimate: Callable[[ModelConfig], int | None]) -> dict[str, Need]:
    """The models placed by memory and what they need: those no group (nor a matrix) decides
    for, with declared `resources`, or else `estimate(model)` bytes (a GGUF estimate).

    Estimates count only in a config that opted into placement (it declares `devices` or
    some model's `resources`): a llama-swap config without either keeps llama-swap's one
    model at a time, even on a machine with GPUs."""
    if config.uses_matrix():
        return {}
    opted_in = bool(config.devices) or any(m.resources is not None for m in config.models.values())
    grouped = {m for g in config.routing.router.settings.groups.values() for m in g.members}
    needs: dict[str, Need] = {}
    for model in config.models.values():
        if model.id in grouped:
            continue
        guess = estimate(model) if model.resources is None and opted_in else None
        need = need_for(model, guess)
        if need is not None:
            needs[model.id] = need
    return needs


def sleep_hosts(config: Config, needs: Mapping[str, Need]) -> dict[str, int]:
    """Models placed by memory that can sleep -> host bytes they hold while asleep."""
    hosts: dict[str, int] = {}
    for model_id, need in needs.items():
        model = config.models[model_id]
        if model.sleep is None:
            continue
        if model.resources is not None:
            hosts[model_id] = model.resources.asleep()
        else:  # a GGUF estimate: its weights go to host memory
            hosts[model_id] = need.memory if isinstance(need.memory, int) else 0
    return hosts


def device_capacities(
    declared: Mapping[str, DeviceConfig], detected: Iterable[tuple[int, int]] = ()
) -> dict[str, int]:
    """Bytes per device name: the declared devices, or else the detected (index, bytes)
    cards as `gpu<index>`."""
    if declared:
        return {name: d.memory for name, d in declared.items()}
    return {f"gpu{index}": total for index, total in detected}


def resident_usage(placed: Mapping[str, int], measured: Mapping[str, int]) -> dict[str, int]:
    """Per device, the larger of what the model was placed with and what it is measured at."""
    return {d: max(placed.get(d, 0), measured.get(d, 0)) for d in sorted({*placed, *measured})}


@dataclass(frozen=True)
class Sleeper:
    """A model asleep in host memory: what it holds there and what stopping it costs."""

    model: str
    host_bytes: int
    cost: float = 1.0


def host_plan(
    host_memory: int | None, asleep: Sequence[Sleeper], incoming: int
) -> tuple[str, ...] | None:
    """The sleeping models to stop so `incoming` more bytes fit in host memory (maybe none);
    None when it can never fit (stop the incoming model instead of putting it to sleep).
    Without a host memory limit nothing is stopped."""
    if host_memory is None:
        return ()
    residents = [Resident(s.model, {HOST: s.host_bytes}, cost=s.cost) for s in asleep]
    decision = place("\0incoming", Need(incoming, (HOST,)), {HOST: host_memory}, residents)
    return decision.evict if isinstance(decision, Fit) else None
