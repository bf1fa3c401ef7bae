"""Taking over models from a previous config's scheduler (config reload), driven synchronously."""

from __future__ import annotations

from swap_harness import Group, Harness, grants, group_policy, only_swap, rejects

from llamaswap.swap.effects import Grant
from llamaswap.swap.rules import Admission
from llamaswap.swap.scheduler import ModelRules, Phase

MODELS = ("a", "b", "c")


def one_at_a_time(rules: dict[str, ModelRules] | None = None) -> Harness:
    return Harness(group_policy(default=Group(MODELS)), rules or {m: ModelRules() for m in MODELS})


def test_adopted_ready_model_is_granted_without_a_swap() -> None:
    h = one_at_a_time()
    h.scheduler.adopt_ready("a", [], h.now)
    assert h.phase("a") is Phase.READY
    assert h.request(1, "a") == [Grant(1, "a")]
    assert h.all_swaps() == []


def test_adopted_leases_hold_off_a_swap_until_each_is_served() -> None:
    h = one_at_a_time()
    h.scheduler.adopt_ready("a", [101, 102], h.now)
    assert h.scheduler.lease_count("a") == 2
    assert h.request(1, "b") == []  # must evict a: drains the two adopted leases first
    h.served(101)
    assert h.all_swaps() == []
    swap = only_swap(h.served(102))
    assert swap.target == "b" and swap.evict == {"a"}
    assert grants(h.swap_done(swap.swap_id)) == [1]


def test_adopted_leases_count_toward_the_concurrency_limit() -> None:
    h = one_at_a_time(
        {m: ModelRules(concurrency_limit=2, admission=Admission.LIMIT) for m in MODELS}
    )
    h.scheduler.adopt_ready("a", [101, 102], h.now)
    assert rejects(h.request(1, "a"))[1].status == 429
    h.served(101)
    assert h.request(2, "a") == [Grant(2, "a")]


def test_adopted_idle_model_expires_after_its_new_ttl() -> None:
    h = one_at_a_time({m: ModelRules(ttl=5.0) for m in MODELS})
    h.now = 10.0
    h.scheduler.adopt_ready("a", [101], h.now)
    assert h.scheduler.next_deadline() is None  # leased: no ttl
    h.now = 12.0
    h.served(101)
    assert h.scheduler.next_deadline() == 17.0


def test_model_being_retired_waits_until_the_old_process_stopped() -> None:
    h = one_at_a_time()
    h.scheduler.adopt_stopping("a")
    # The previous config's process still runs: wait for it, and so does a request whose
    # swap would have to evict it.
    assert grants(h.request(1, "a")) == [] and h.all_swaps() == []
    assert grants(h.request(2, "b")) == [] and h.all_swaps() == []
    effects = h.stopped("a")
    swap = only_swap(effects)
    assert swap.target == "a"
    assert grants(h.swap_done(swap.swap_id)) == [1]
