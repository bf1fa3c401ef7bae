"""What placement by memory holds on each device, and why the last evictions happened. Pure.

* `ModelMemory`: one placed model's bytes per device: declared (its `resources`, or a GGUF
  estimate), measured (its process tree, once ready) and counted (what placement uses:
  the larger of the two).
* `over_declared`: the devices where a model measured more than it declared, the fact the
  log warns about and the UI flags.
* `eviction_record`: the short account of one swap that stopped or put models to sleep to
  make room: which, where, and how many bytes were needed against how many were free. The
  router publishes it as an `eviction` event; the event bus keeps the last few
  (`observe.events.EVICTION_HISTORY`), across reloads, for `/running` and the UI.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelMemory", "eviction_record", "over_declared"]


@dataclass(frozen=True)
class ModelMemory:
    """Where placement put a model and the bytes it holds there, per device name."""

    devices: tuple[str, ...]
    declared: Mapping[str, int]
    counted: Mapping[str, int]
    # None until the process was measured (or when it cannot be: no GPU tool answered).
    measured: Mapping[str, int] | None = None
    # "resources" (declared in the config) or "estimate" (from the GGUF file in `cmd`).
    source: str = "resources"
    # Host bytes it holds while asleep (None: it cannot sleep).
    asleep_host: int | None = None


def over_declared(declared: Mapping[str, int], measured: Mapping[str, int] | None) -> list[str]:
    """Devices on which `measured` exceeds `declared`, sorted (none before a measurement)."""
    if measured is None:
        return []
    return sorted(d for d, used in measured.items() if used > declared.get(d, 0))


def eviction_record(
    *,
    at: float,
    target: str,
    evicted: Collection[str],
    slept: Collection[str],
    needed: Mapping[str, int],
    capacity: Mapping[str, int],
    holding: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """The account of a swap to `target` that evicts `evicted` (of which `slept` are put to
    sleep rather than stopped), taken before any of them left: `needed` is what the target
    takes per device, `holding` what each model on the devices holds now (the evicted ones
    included), so `freeBytes` is what was free when the decision was made. A swap decided
    by groups or a matrix rather than by memory has no `needed`, and no devices."""
    devices = []
    for name in sorted(needed):
        held = sum(usage.get(name, 0) for usage in holding.values())
        total = capacity.get(name, 0)
        devices.append(
            {
                "name": name,
                "capacityBytes": total,
                "neededBytes": needed[name],
                "freeBytes": max(0, total - held),
            }
        )
    return {
        "at": at,
        "target": target,
        "stopped": sorted(set(evicted) - set(slept)),
        "slept": sorted(slept),
        "by": "memory" if needed else "policy",
        "devices": devices,
    }
