"""Group (spec §4.1) and matrix (§4.3) eviction through the scheduler: the StartSwap evict sets."""

from __future__ import annotations

from swap_harness import (
    Group,
    Harness,
    compiled,
    grants,
    group_policy,
    matrix_policy,
    only_swap,
    swaps,
)

from llamaswap.swap.policy import EvictionPolicy
from llamaswap.swap.scheduler import Phase


def run(h: Harness, *models: str) -> None:
    """Start each model in turn (one request each, served at once), then check they all run."""
    for model in models:
        request_id = len(h.log) + 1000
        effects = h.request(request_id, model)
        if not grants(effects):
            swap = only_swap(effects)
            assert grants(h.swap_done(swap.swap_id)) == [request_id]
        h.served(request_id)
    for model in models:
        assert h.phase(model) is Phase.READY, model


def evict_for(h: Harness, model: str) -> frozenset[str]:
    """The evict set of the swap a request for `model` launches now."""
    return only_swap(h.request(len(h.log) + 5000, model)).evict


# ---- groups --------------------------------------------------------------------------------


def groups_harness(policy: EvictionPolicy) -> Harness:
    return Harness(policy, ["a", "b", "c", "d", "p", "q"])


def test_group_swap_true_stops_the_previous_member() -> None:
    h = groups_harness(group_policy(g=Group(("a", "b"), exclusive=False)))
    run(h, "a")
    assert evict_for(h, "b") == {"a"}


def test_group_swap_false_members_run_together() -> None:
    h = groups_harness(group_policy(g=Group(("a", "b"), swap=False)))
    run(h, "a")
    assert evict_for(h, "b") == set()


def test_group_exclusive_stops_other_groups_but_not_persistent() -> None:
    policy = group_policy(
        x=Group(("a", "b"), swap=False, exclusive=False),
        keep=Group(("p", "q"), exclusive=False, persistent=True),
        main=Group(("c", "d")),
    )
    h = groups_harness(policy)
    run(h, "a", "b", "p")
    assert evict_for(h, "c") == {"a", "b"}


def test_group_persistent_still_swaps_within_itself() -> None:
    policy = group_policy(keep=Group(("p", "q"), persistent=True), other=Group(("a",)))
    h = groups_harness(policy)
    run(h, "p")
    assert evict_for(h, "q") == {"p"}


def test_group_persistent_exclusive_evicts_others() -> None:
    policy = group_policy(keep=Group(("p",), persistent=True), other=Group(("a",)))
    h = groups_harness(policy)
    run(h, "a")
    assert evict_for(h, "p") == {"a"}


def test_group_non_exclusive_groups_load_in_parallel() -> None:
    policy = group_policy(
        x=Group(("a",), exclusive=False),
        y=Group(("b",), exclusive=False),
    )
    h = groups_harness(policy)
    first = only_swap(h.request(1, "a"))
    second = only_swap(h.request(2, "b"))
    assert first.evict == second.evict == frozenset()
    assert {s.target for s in h.scheduler.active_swaps()} == {"a", "b"}


def test_group_same_group_swaps_serialise_before_starting_is_visible() -> None:
    h = groups_harness(group_policy(g=Group(("a", "b"), exclusive=False)))
    first = only_swap(h.request(1, "a"))
    assert swaps(h.request(2, "b")) == []  # a is only a swap target yet: still a collision
    h.swap_done(first.swap_id)
    second = only_swap(h.served(1))
    assert second.evict == {"a"}


def test_group_gotcha_non_exclusive_leaves_exclusive_running() -> None:
    policy = group_policy(
        excl=Group(("a",)),
        side=Group(("b",), exclusive=False),
    )
    h = groups_harness(policy)
    run(h, "a")
    assert evict_for(h, "b") == set()  # the exclusive group keeps running
    h2 = groups_harness(policy)
    run(h2, "b")
    assert evict_for(h2, "a") == {"b"}  # but loading the exclusive one unloads b


def test_group_default_single_group_runs_one_model_at_a_time() -> None:
    h = groups_harness(group_policy(default=Group(("a", "b", "c", "d", "p", "q"))))
    run(h, "a")
    assert evict_for(h, "b") == {"a"}


def test_group_ungrouped_model_behaves_as_its_own_exclusive_group() -> None:
    # Regression: the fallback for a model in no group evicted persistent groups when it was
    # the target, and was never evicted by another exclusive group's target.
    policy = group_policy(
        keep=Group(("p",), exclusive=False, persistent=True),
        main=Group(("a",)),
        side=Group(("b",), exclusive=False),
    )
    h = groups_harness(policy)
    run(h, "p", "b")
    assert evict_for(h, "c") == {"b"}  # persistent p survives
    h2 = groups_harness(policy)
    run(h2, "c")
    assert evict_for(h2, "a") == {"c"}
    h3 = groups_harness(policy)
    run(h3, "c")
    assert evict_for(h3, "b") == set()  # non-exclusive leaves it alone
    h4 = groups_harness(policy)
    run(h4, "c")
    assert evict_for(h4, "d") == {"c"}


# ---- matrix --------------------------------------------------------------------------------

SPEC_MODELS = ("g", "q", "m", "v", "e", "sd", "L")
SPEC_SETS = {
    "standard": "(g|q|m)&v",
    "with_rerank": "(g|q)&v&e",
    "creative": "(g|q)&sd",
    "full": "L",
}


def spec_matrix() -> Harness:
    matrix = compiled(SPEC_MODELS, SPEC_SETS, costs={"v": 50, "L": 30})
    return Harness(matrix_policy(matrix), SPEC_MODELS)


def test_matrix_swap_within_set_evicts_cheapest() -> None:
    h = spec_matrix()
    run(h, "g", "v")
    assert evict_for(h, "q") == {"g"}


def test_matrix_target_alone_set_evicts_all() -> None:
    h = spec_matrix()
    run(h, "g", "v")
    assert evict_for(h, "L") == {"g", "v"}


def test_matrix_evict_costs_steer_the_choice() -> None:
    h = spec_matrix()
    run(h, "g", "v")
    assert evict_for(h, "sd") == {"v"}


def test_matrix_keeps_the_larger_coexisting_set() -> None:
    h = spec_matrix()
    run(h, "q", "v", "e")
    assert evict_for(h, "g") == {"q"}


def test_matrix_tie_break_by_definition_order() -> None:
    models = ("g", "v", "m")
    matrix = compiled(models, {"s1": "g&v", "s2": "g&m", "s3": "v&m"}, costs={"v": 50})
    h = Harness(matrix_policy(matrix), models)
    run(h, "v", "m")
    assert evict_for(h, "g") == {"m"}
    tie = compiled(models, {"s1": "g&m", "s2": "g&v", "s3": "v&m"})
    h2 = Harness(matrix_policy(tie), models)
    run(h2, "v", "m")
    assert evict_for(h2, "g") == {"v"}  # equal cost: the first set wins


def test_matrix_coexisting_models_take_the_fast_path() -> None:
    h = spec_matrix()
    run(h, "g", "v")
    assert grants(h.request(1, "g")) == [1]
    assert grants(h.request(2, "v")) == [2]


def test_matrix_coexisting_set_loads_in_parallel() -> None:
    h = spec_matrix()
    first = only_swap(h.request(1, "g"))
    second = only_swap(h.request(2, "v"))
    assert first.evict == second.evict == frozenset()


def test_matrix_starting_models_count_as_running() -> None:
    h = spec_matrix()
    start_v = only_swap(h.request(1, "v"))
    # sd cannot run with v: v is only starting, yet sd must wait instead of starting too.
    assert swaps(h.request(2, "sd")) == []
    # g may join v (standard): a parallel start with nothing evicted.
    assert only_swap(h.request(3, "g")).evict == frozenset()
    h.swap_done(start_v.swap_id)
    # Once v is idle, sd evicts it and keeps g (still starting) per creative = g & sd.
    assert only_swap(h.served(1)).evict == {"v"}


def test_matrix_incompatible_request_queues_then_evicts() -> None:
    h = spec_matrix()
    run(h, "g", "v")
    assert grants(h.request(1, "v")) == [1]
    assert swaps(h.request(2, "L")) == []
    launched = only_swap(h.served(1))
    assert launched.target == "L"
    assert launched.evict == {"g", "v"}


def test_matrix_model_in_no_set_runs_alone() -> None:
    models = ("a", "b", "c")
    h = Harness(matrix_policy(compiled(models, {"s": "a&b"})), models)
    run(h, "a", "b")
    assert evict_for(h, "c") == {"a", "b"}
