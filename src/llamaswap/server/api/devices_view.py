"""Device memory as `/running` (its `memory` key) and the `memory` event of `/api/events`
show it: per device its capacity and the models on it, host memory for sleeping models,
and the last evictions with their reasons.

Built from the router's read-only views (`capacity`, `memory_of`, `state`, `host_memory`)
and the evictions the event bus keeps; nothing here decides anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llamaswap.observe.device_memory import ModelMemory, over_declared
from llamaswap.supervisor import ProcessState

if TYPE_CHECKING:
    from llamaswap.observe.events import EventBus
    from llamaswap.server.state import AppState

__all__ = ["memory_view", "recent_evictions"]

# States in which a model sits on its devices (asleep: it holds none of their memory, but
# waking it needs that memory back on the same devices).
_ON_DEVICE = (ProcessState.STARTING, ProcessState.READY, ProcessState.ASLEEP, ProcessState.STOPPING)


def _model_entry(model: str, state: ProcessState, mem: ModelMemory, device: str) -> dict[str, Any]:
    measured = None if mem.measured is None else mem.measured.get(device, 0)
    return {
        "model": model,
        "state": state.value,
        "declaredBytes": mem.declared.get(device, 0),
        "declaredFrom": mem.source,
        "measuredBytes": measured,
        "countedBytes": mem.counted.get(device, 0),
        "overDeclared": device in over_declared(mem.declared, mem.measured),
        # What it holds on the device now: nothing while asleep.
        "heldBytes": 0 if state is ProcessState.ASLEEP else mem.counted.get(device, 0),
    }


def recent_evictions(bus: EventBus, now: float | None = None) -> list[dict[str, Any]]:
    """The evictions the bus kept, oldest first, each with `ago_s` (seconds before `now`)."""
    when = time.time() if now is None else now
    return [
        {**k.event.data, "ago_s": round(max(0.0, when - k.at), 3)}
        for k in bus.recent("eviction")
        if isinstance(k.event.data, dict)
    ]


def memory_view(state: AppState) -> dict[str, Any]:
    """`{"devices": [...], "hostMemory": {...}, "evictions": [...]}` (see docs/api.md)."""
    router = state.router
    capacity = router.capacity()
    placed: dict[str, tuple[ProcessState, ModelMemory]] = {}
    for model in sorted(state.config.models):
        process_state = router.state(model)
        mem = router.memory_of(model)
        if mem is not None and process_state in _ON_DEVICE:
            placed[model] = (process_state, mem)
    devices = []
    for name in sorted(capacity):
        models = [
            _model_entry(model, s, mem, name)
            for model, (s, mem) in placed.items()
            if name in mem.devices
        ]
        used = sum(m["heldBytes"] for m in models)
        devices.append(
            {
                "name": name,
                "capacityBytes": capacity[name],
                "usedBytes": used,
                "freeBytes": max(0, capacity[name] - used),
                "models": models,
            }
        )
    asleep = {m: mem.asleep_host or 0 for m, (s, mem) in placed.items() if s is ProcessState.ASLEEP}
    return {
        "devices": devices,
        "hostMemory": {
            "capacityBytes": router.host_memory,
            "detected": state.config.host_memory is None,
            "asleepBytes": sum(asleep.values()),
            "asleep": sorted(asleep),
        },
        "evictions": recent_evictions(state.router.events),
    }
