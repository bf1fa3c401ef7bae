"""Which models are placed by memory, where they sit and what they hold. Pure.

The scheduler owns one `Residency`. It knows each placed model's `Need` (declared
`resources`, or a GGUF estimate), the devices' capacities, and per model the devices it was
put on and the bytes it is counted for there: what it was placed with, raised to what was
measured once it ran (`swap.memory.resident_usage`). `decide` turns the scheduler's view
(running models, leased models, eviction costs) into `place()`'s inputs and its answer into
what the scheduler acts on:

1. No capacities known (no `devices`, none detected) or the target is not placed by memory
   → None: the group/matrix policy decides alone.
2. `Fit` → `Placed`: evict its set, start on its devices.
3. `Wait` → `Placed` with the set it would evict once the leased blockers are released; the
   scheduler's drain keeps them running until their leases end (never stopped while leased).
4. `NeverFits` → `Refused`: a message naming the model, its need and the capacity.

Sleep tier: a model with a sleep config that placement evicts is put to sleep instead of
stopped while host memory holds it (`sleep_plan`: `host_plan` picks the cheapest sleeping
models to stop for room; if it can never fit, the model is stopped). A sleeping model holds
no device memory; waking it needs its memory back on the very devices it sleeps on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from llamaswap.config.sizes import format_size
from llamaswap.swap.memory import Sleeper, host_plan, resident_usage
from llamaswap.swap.placement import Fit, Need, NeverFits, Resident, Wait, place

__all__ = ["Placed", "Refused", "Residency", "usage_on"]


@dataclass(frozen=True)
class Placed:
    """Start the target on `devices`, counted for `usage` there, after evicting `evict`."""

    devices: tuple[str, ...]
    usage: Mapping[str, int]
    evict: frozenset[str] = frozenset()
    # True when only leased models stood in the way (they are stopped once released).
    waits: bool = False
    # Of `evict`, the models put to sleep rather than stopped.
    sleep: frozenset[str] = frozenset()
    # Sleeping models stopped to make room in host memory (not in `evict`: they hold no
    # device memory).
    stop_asleep: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refused:
    """The target can never fit on the devices it may use."""

    message: str


def usage_on(need: Need, devices: tuple[str, ...]) -> dict[str, int]:
    """Bytes per device a model with `need` holds once placed on `devices`."""
    if isinstance(need.memory, int):
        return dict.fromkeys(devices, need.memory)
    return {d: b for d, b in need.memory.items() if d in devices}


def _describe(need: Need) -> str:
    if isinstance(need.memory, int):
        where = f" on one of {', '.join(need.devices)}" if need.devices else " on one device"
        return f"{format_size(need.memory)}{where}"
    return ", ".join(f"{format_size(b)} on {d}" for d, b in sorted(need.memory.items()))


def _capacity_text(capacity: Mapping[str, int]) -> str:
    return ", ".join(f"{d} has {format_size(b)}" for d, b in sorted(capacity.items())) or "none"


class Residency:
    """See the module docstring. `needs`: the models placed by memory and what they need."""

    def __init__(
        self,
        needs: Mapping[str, Need],
        capacity: Mapping[str, int] | None = None,
        sleepers: Mapping[str, int] | None = None,
        host_memory: int | None = None,
    ):
        """`sleepers`: models that can sleep -> host bytes they hold asleep; `host_memory`:
        the host RAM sleeping models may hold (None: no limit)."""
        self._needs = dict(needs)
        self._capacity: dict[str, int] = dict(capacity or {})
        self._sleepers = {m: b for m, b in (sleepers or {}).items() if m in self._needs}
        self._host_memory = host_memory
        self._placed: dict[str, tuple[str, ...]] = {}
        self._usage: dict[str, dict[str, int]] = {}

    @property
    def capacity(self) -> dict[str, int]:
        return dict(self._capacity)

    def set_capacity(self, capacity: Mapping[str, int]) -> None:
        """The devices became known (detected at start)."""
        self._capacity = dict(capacity)

    def places(self, model: str) -> bool:
        """True when placement by memory decides for `model` now."""
        return bool(self._capacity) and model in self._needs

    def need(self, model: str) -> Need | None:
        return self._needs.get(model)

    def can_sleep(self, model: str) -> bool:
        return self.places(model) and model in self._sleepers

    def devices(self, model: str) -> tuple[str, ...] | None:
        """The devices `model` was last placed on (None: never placed)."""
        return self._placed.get(model)

    def usage(self, model: str) -> dict[str, int]:
        """Bytes per device `model` is counted for. A placed model never assigned here
        (taken over from a previous config without its placement) is counted on every
        device it may use: too much rather than too little."""
        usage = self._usage.get(model)
        if usage is not None:
            return dict(usage)
        need = self._needs[model]
        if isinstance(need.memory, int):
            allowed = need.devices or tuple(self._capacity)
            return dict.fromkeys((d for d in allowed if d in self._capacity), need.memory)
        return dict(need.memory)

    def assign(self, model: str, placed: Placed) -> None:
        """`model` is (to be) started as `placed` says: count it there from now on."""
        self._placed[model] = placed.devices
        self._usage[model] = dict(placed.usage)

    def adopt(self, model: str, devices: tuple[str, ...], usage: Mapping[str, int]) -> None:
        """`model` keeps running from a previous config, where it sat on `devices`."""
        self._placed[model] = devices
        self._usage[model] = dict(usage)

    def measured(self, model: str, measured: Mapping[str, int]) -> dict[str, int]:
        """What `model`'s processes really hold: counted as max(placed, measured) from now
        on (a model that uses more than it said is not packed too tightly again)."""
        usage = resident_usage(self._usage.get(model, {}), measured)
        self._usage[model] = usage
        return dict(usage)

    def decide(
        self,
        target: str,
        running: Collection[str],
        leased: Collection[str],
        cost: Callable[[str], float],
        asleep: Collection[str] = (),
        stop_cost: Callable[[str], float] | None = None,
    ) -> Placed | Refused | None:
        """Where `target` (not running) goes among the `running` models (see the module
        docstring); `leased`: models that may not be stopped now; `cost`: of evicting one
        (of putting it to sleep, for one that can); `asleep`: the sleeping models (a sleeping
        target is woken where it sleeps); `stop_cost`: of stopping a sleeping model."""
        if not self.places(target):
            return None
        need = self._needs[target]
        if target in asleep:
            need = Need(self.usage(target))  # its memory back, on the devices it sleeps on
        residents = [
            Resident(m, self.usage(m), m in leased, cost(m))
            for m in sorted(running)
            if m in self._needs
        ]
        decision = place(target, need, self._capacity, residents)
        if isinstance(decision, NeverFits):
            return Refused(
                f"model {target} can never fit: it needs {_describe(need)}, "
                f"and {_capacity_text(self._capacity)}"
            )
        fit: Fit = decision.then if isinstance(decision, Wait) else decision
        usage = usage_on(need, fit.devices)
        sleep, stop = self.sleep_plan(
            fit.evict, [m for m in asleep if m != target], stop_cost or cost
        )
        return Placed(
            fit.devices, usage, frozenset(fit.evict), isinstance(decision, Wait), sleep, stop
        )

    def sleep_plan(
        self, evict: Collection[str], asleep: Collection[str], stop_cost: Callable[[str], float]
    ) -> tuple[frozenset[str], frozenset[str]]:
        """Of `evict`, the models put to sleep, and the sleeping models (`asleep`) stopped to
        make room for them in host memory. The dearest to stop go to sleep first; one that
        could never fit in host memory is stopped."""
        holding = {m: self._sleepers.get(m, 0) for m in asleep}
        sleep: set[str] = set()
        stop: set[str] = set()
        for model in sorted(evict, key=lambda m: (-stop_cost(m), m)):
            host = self._sleepers.get(model)
            if host is None:
                continue
            sleepers = [Sleeper(m, b, stop_cost(m)) for m, b in sorted(holding.items())]
            plan = host_plan(self._host_memory, sleepers, host)
            if plan is None:
                continue
            for m in plan:
                del holding[m]
                if m in sleep:
                    sleep.discard(m)  # put to sleep just now, stopped after all
                else:
                    stop.add(m)
            holding[model] = host
            sleep.add(model)
        return frozenset(sleep), frozenset(stop)
