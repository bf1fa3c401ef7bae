"""Ollama's `keep_alive` in the pure scheduler: an idle ttl for one load of a model."""

from __future__ import annotations

from swap_harness import Group, Harness, group_policy, only_swap, stops

from llamaswap.swap.effects import StopModels, StopReason
from llamaswap.swap.scheduler import ModelRules, Phase

MODELS = ("a", "b")


def loaded(ttl: float) -> Harness:
    """`a` (rule ttl `ttl`) ready at t=0 with nothing in flight; one model at a time."""
    h = Harness(group_policy(default=Group(MODELS)), {m: ModelRules(ttl=ttl) for m in MODELS})
    swap = only_swap(h.request(1, "a"))
    h.swap_done(swap.swap_id)
    h.served(1)
    assert h.phase("a") is Phase.READY
    return h


def test_keep_alive_replaces_the_ttl_of_the_current_load() -> None:
    h = loaded(ttl=300)
    h.scheduler.on_keep_alive("a", 5)
    assert h.scheduler.ttl("a") == 5
    assert h.scheduler.next_deadline() == 5
    assert h.tick(4.9) == []
    assert h.tick(5) == [StopModels(frozenset({"a"}), StopReason.TTL)]


def test_keep_alive_gives_a_ttl_to_a_model_without_one() -> None:
    h = loaded(ttl=0)
    assert h.scheduler.next_deadline() is None
    h.scheduler.on_keep_alive("a", 60)
    assert h.scheduler.next_deadline() == 60


def test_keep_alive_zero_means_never_stopped_for_idleness() -> None:
    h = loaded(ttl=10)
    h.scheduler.on_keep_alive("a", 0)
    assert h.scheduler.next_deadline() is None
    assert h.tick(1e9) == []
    # An eviction still stops it: keep_alive is about idleness only.
    swap = only_swap(h.request(2, "b"))
    assert swap.evict == frozenset({"a"})


def test_the_next_load_has_the_rule_ttl_again() -> None:
    h = loaded(ttl=30)
    h.scheduler.on_keep_alive("a", 5)
    assert stops(h.tick(5))[0].reason is StopReason.TTL
    h.stopped("a")
    h.now = 100
    swap = only_swap(h.request(2, "a"))
    h.swap_done(swap.swap_id)
    h.served(2)
    assert h.scheduler.ttl("a") == 30
    assert h.scheduler.next_deadline() == 130


def test_keep_alive_of_a_stopped_model_is_ignored() -> None:
    h = loaded(ttl=30)
    h.scheduler.on_keep_alive("b", 5)
    assert h.scheduler.ttl("b") == 30
