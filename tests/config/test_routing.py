"""Groups, routing block and fifo priority (spec §2.5, §2.7)."""

from __future__ import annotations

from llamaswap.config.model import GroupConfig

from ._helpers import MODELS, load, messages


def test_default_group_holds_ungrouped_sorted() -> None:
    c = load(
        MODELS + "groups:\n  g: {swap: false, exclusive: false, persistent: true, members: [b]}\n"
    )
    assert c.group_map() == {
        "g": GroupConfig(swap=False, exclusive=False, persistent=True, members=["b"]),
        "(default)": GroupConfig(members=["a", "c"]),
    }
    assert not c.uses_matrix()


def test_group_errors_collected() -> None:
    assert messages(
        MODELS + "groups:\n  g1: {members: [a, a, b]}\n  g2: {members: [b, ghost, al]}\n"
    ) == [
        "groups.g1.members: duplicate model member a found in group: g1",
        "groups.g2.members: model member b is used in multiple groups: g1 and g2",
        'groups.g2.members: group g2: no model config for "ghost"',
        # `al` is `a`'s alias, resolved to `a` (already in g1).
        "groups.g2.members: model member al is used in multiple groups: g1 and g2",
    ]


def test_routing_group_settings() -> None:
    c = load(
        MODELS + "routing:\n  router:\n    use: group\n    settings:\n      groups:\n"
        "        g: {members: [a, b], swap: false}\n"
    )
    assert c.group_map()["g"].members == ["a", "b"]
    assert c.group_map()["(default)"].members == ["c"]


def test_routing_both_settings_use_picks() -> None:
    text = (
        MODELS
        + "routing:\n  router:\n    use: %s\n    settings:\n      groups: {g: {members: [a]}}\n"
        "      matrix: {sets: {s: 'a & b'}}\n"
    )
    assert load(text % "matrix").uses_matrix()
    assert "g" in load(text % "group").group_map()
    assert load(text % '""').group_map()["g"].members == ["a"]


def test_routing_errors() -> None:
    assert messages(MODELS + "groups: {g: {members: [a]}}\nrouting:\n  router: {use: group}\n") == [
        "routing.router: config uses both the legacy top-level 'matrix'/'groups' keys and the "
        "new 'routing.router' block; move them under routing.router.settings"
    ]
    assert messages(MODELS + "groups: {g: {members: [a]}}\nmatrix: {sets: {s: a}}\n") == [
        "matrix: config cannot use both 'groups' and 'matrix'"
    ]
    assert messages(MODELS + "routing:\n  router: {use: matrix}\n") == [
        "routing.router.use: routing.router.use is 'matrix' but routing.router.settings.matrix "
        "is not set"
    ]
    assert messages(MODELS + "routing:\n  router: {use: lottery}\n  scheduler: {use: lifo}\n") == [
        'routing.router.use: unknown router "lottery" (valid: group, matrix)',
        'routing.scheduler.use: unknown scheduler "lifo" (valid: fifo)',
    ]


def test_fifo_priority() -> None:
    c = load(
        MODELS + "routing:\n  scheduler:\n    use: fifo\n    settings:\n      fifo:\n"
        "        priority: {al: 10, b: 5}\n"
    )
    # keyed by alias in YAML, effective for the real ID (llama-swap ignores alias keys)
    assert [c.fifo_priority(m) for m in "abc"] == [10, 5, 0]
    assert messages(
        MODELS + "routing:\n  scheduler:\n    settings:\n      fifo:\n        priority: {x: 1}\n"
    ) == [
        "routing.scheduler.settings.fifo.priority: routing.scheduler.settings.fifo.priority "
        'references unknown model "x"'
    ]
