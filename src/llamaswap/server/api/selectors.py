"""Selectors: virtual model IDs that pick one of their targets per request (spec §2.9).

A request naming a selector is rewritten to the chosen target's name right after profile
pins, so aliases, peers, filters and routing then apply as if the client had named it.

* `pin`: always the first target.
* `warm`: the first target that is ready, else the first that is starting, else the first.
* `spillover`: spread over targets by the requests each currently has through this selector
  (its reservations). Targets that are stopping are skipped. While some active target (ready
  or starting, or holding reservations) has fewer than `settings.spillover`, the least busy
  active one is chosen (round-robin among equals); otherwise the first cold target (stopped,
  none reserved) is started; with no cold target left, the least busy active one. None
  usable: 503.

`choose` decides (pure); `Reservations` counts and is held for the request's whole life.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from llamaswap.config.model import SelectorConfig
from llamaswap.errors import RequestError
from llamaswap.server.api.listing import list_entry
from llamaswap.server.state import AppState
from llamaswap.supervisor import ProcessState

ACTIVE_STATES = (ProcessState.READY, ProcessState.STARTING)
SKIPPED_STATES = (ProcessState.STOPPING, ProcessState.SHUTDOWN)


def choose(
    selector: SelectorConfig,
    states: Mapping[str, ProcessState],
    reserved: Mapping[str, int],
    turn: int,
) -> str | None:
    """The target to use now. `states` has local targets only (a peer has no process);
    `reserved` counts this selector's requests per target; `turn` rotates ties."""
    targets = selector.targets
    if selector.strategy == "pin":
        return targets[0]
    if selector.strategy == "warm":
        for wanted in ACTIVE_STATES:
            for target in targets:
                if states.get(target) is wanted:
                    return target
        return targets[0]
    return _spillover(targets, states, reserved, selector.settings.spillover, turn)


def _spillover(
    targets: Sequence[str],
    states: Mapping[str, ProcessState],
    reserved: Mapping[str, int],
    limit: int,
    turn: int,
) -> str | None:
    usable = [t for t in targets if states.get(t) not in SKIPPED_STATES]
    active = [t for t in usable if states.get(t) in ACTIVE_STATES or reserved.get(t, 0) > 0]
    least = min((reserved.get(t, 0) for t in active), default=None)
    if least is not None and least < limit:
        return _least_busy(active, reserved, least, turn)
    cold = [t for t in usable if t not in active]
    if cold:
        return cold[0]
    if least is not None:
        return _least_busy(active, reserved, least, turn)
    return None


def _least_busy(active: Sequence[str], reserved: Mapping[str, int], least: int, turn: int) -> str:
    tied = [t for t in active if reserved.get(t, 0) == least]
    return tied[turn % len(tied)]


class Reservations:
    """Requests currently routed through each selector, per target. One per server: it
    outlives reloads, so requests started before a reload still release what they took."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}
        self._turns: Counter[str] = Counter()

    def counts(self, selector_id: str) -> Mapping[str, int]:
        return self._counts.get(selector_id, Counter())

    @contextmanager
    def reserve(self, state: AppState, selector_id: str) -> Iterator[str]:
        """Choose a target for one request and hold its reservation until the block ends."""
        selector = state.config.selectors[selector_id]
        counts = self._counts.setdefault(selector_id, Counter())
        target = choose(selector, local_states(state, selector), counts, self._turns[selector_id])
        if target is None:
            raise RequestError(
                f'selector "{selector_id}" has no available spillover targets', status=503
            )
        self._turns[selector_id] += 1
        counts[target] += 1
        try:
            yield target
        finally:
            counts[target] -= 1


RESERVATIONS = web.AppKey("llamaswap_selector_reservations", Reservations)


def local_states(state: AppState, selector: SelectorConfig) -> dict[str, ProcessState]:
    """Process state of each local target (by the name the selector uses)."""
    states = {}
    for target in selector.targets:
        model_id = state.config.resolve_model(target)
        if model_id is not None:
            states[target] = state.router.state(model_id)
    return states


def listing_entries(state: AppState, now: int) -> list[dict[str, Any]]:
    """`/v1/models` entries of the listed selectors (spec §5.5)."""
    entries = []
    for selector_id, selector in state.config.selectors.items():
        if selector.unlisted:
            continue
        states = local_states(state, selector)
        watched = selector.targets[:1] if selector.strategy == "pin" else selector.targets
        loaded = any(states.get(t) in ACTIVE_STATES for t in watched)
        meta: dict[str, Any] = {
            **selector.metadata,
            "type": "selector",
            "strategy": selector.strategy,
            "targets": list(selector.targets),
        }
        if selector.strategy == "spillover":
            meta["spillover"] = selector.settings.spillover
        entries.append(
            list_entry(
                selector_id,
                now,
                name=selector.name,
                description=selector.description,
                meta=meta,
                loaded=loaded,
            )
        )
    return entries
