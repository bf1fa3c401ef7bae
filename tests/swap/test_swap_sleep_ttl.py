"""A model put to sleep still unloads after its ttl: its idle time runs on while it sleeps
(it holds host memory and a process that nobody asked for)."""

from __future__ import annotations

from swap_harness import Group, Harness, grants, group_policy, only_swap, stops

from llamaswap.swap.effects import StopModels, StopReason
from llamaswap.swap.placement import Need
from llamaswap.swap.residency import Residency
from llamaswap.swap.rules import ModelRules
from llamaswap.swap.scheduler import Phase

G = 1024**3


def test_a_sleeping_model_is_stopped_once_its_ttl_has_passed_since_its_last_request() -> None:
    needs = {"a": Need(14 * G), "b": Need(14 * G)}
    residency = Residency(needs, {"gpu0": 24 * G}, {"a": 14 * G})
    rules = {"a": ModelRules(ttl=60.0), "b": ModelRules()}
    h = Harness(group_policy(default=Group(("a", "b"))), rules, residency=residency)
    swap = only_swap(h.request(1, "a"))
    assert grants(h.swap_done(swap.swap_id, load_time=1.0)) == [1]
    h.served(1)  # idle from t=0
    h.now = 30.0
    swap = only_swap(h.request(2, "b"))  # 14 + 14 > 24: a is put to sleep
    assert swap.sleep == frozenset({"a"})
    h.swap_done(swap.swap_id)
    assert h.phase("a") is Phase.ASLEEP
    assert h.scheduler.next_deadline() == 60.0
    assert stops(h.tick(59.0)) == []
    assert stops(h.tick(60.0)) == [StopModels(frozenset({"a"}), StopReason.TTL)]
    assert h.phase("a") is Phase.STOPPING
