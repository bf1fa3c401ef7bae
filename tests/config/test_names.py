"""Peers, profiles and selectors validation (spec §2.8, §2.9)."""

from __future__ import annotations

from llamaswap.config.names import peer_names

from ._helpers import MODELS, load, messages


def test_peer_defaults_and_names() -> None:
    c = load(
        """
        peers:
          p1: {proxy: "https://one/base", apiKey: k, models: [x, shared]}
          p2: {proxy: "http://two:8080", models: [y, shared], timeouts: {connect: 3}}
        """
    )
    t = c.peers["p2"].timeouts
    assert (t.connect, t.response_header, t.idle_conn) == (3, 60, 90)
    names = peer_names(c)
    assert names["x"] == ("p1", "x")
    assert names["p2/shared"] == ("p2", "shared")
    assert "shared" not in names  # offered by two peers: only the full names work


def test_peer_errors() -> None:
    got = messages(
        """
        models:
          p1/x: {cmd: "s ${PORT}"}
        peers:
          p1: {models: [x]}
          p2: {proxy: "http://[bad", models: []}
        """
    )
    assert got[0] == "peers.p1.proxy: proxy is required"
    assert (
        got[1] == 'peers.p1.models: peer model name "p1/x" conflicts with a local model ID or alias'
    )
    assert got[2].startswith("peers.p2.proxy: invalid peer proxy URL (http://[bad): ")
    assert got[3] == "peers.p2.models: peer models can not be empty"


def test_peer_fqn_ambiguity() -> None:
    assert messages(
        """
        peers:
          a: {proxy: "http://h", models: ["b/c"]}
          a/b: {proxy: "http://h", models: [c]}
        """
    ) == [
        'peers.a/b.models: peer model name "a/b/c" is ambiguous between peers.a model "b/c" '
        'and peers.a/b model "c"'
    ]


def test_profiles_load_and_validate() -> None:
    c = load(
        MODELS
        + """
        profiles:
          fast:
            description: quick
            pins: {chat: a, real: b, off: null, alias: al}
        """.replace("\n        ", "\n")
    )
    assert c.profiles["fast"].pins == {"chat": "a", "real": "b", "off": None, "alias": "al"}
    got = messages(
        MODELS
        + "profiles:\n  old: [a, b]\n  empty: {pins: {}}\n  chain: {pins: {x: a, y: x, z: ghost}}\n"
    )
    assert got == [
        "profiles.old: profile must be a mapping with description and pins; the legacy list "
        "syntax is no longer supported",
        "profiles.empty.pins: must contain at least one entry",
        'profiles.chain.pins.y: references unknown model "x"',
        'profiles.chain.pins.z: references unknown model "ghost"',
    ]


def test_selectors() -> None:
    c = load(
        MODELS
        + "groups:\n  pool: {swap: false, members: [b, c]}\n"
        + "peers:\n  p: {proxy: 'http://h', models: [r]}\n"
        + "selectors:\n"
        + "  smart: {strategy: spillover, targets: [b, c, p/r]}\n"
        + "  warmish: {strategy: warm, targets: [al, b]}\n"
    )
    assert c.selectors["smart"].settings.spillover == 1
    assert c.selectors["warmish"].targets == ["al", "b"]


def test_selector_errors() -> None:
    got = messages(
        MODELS
        + "peers:\n  p: {proxy: 'http://h', models: [r]}\n"
        + "selectors:\n"
        + "  a: {strategy: pin, targets: [b]}\n"
        + "  nostrat: {targets: [b]}\n"
        + "  weird: {strategy: random, targets: []}\n"
        + "  chain: {strategy: pin, targets: [nostrat, ghost]}\n"
        + "  w: {strategy: warm, targets: [r]}\n"
        + "  dup: {strategy: pin, targets: [a, al]}\n"
        + "  sp: {strategy: spillover, targets: [b, c], settings: {spillover: 0}}\n"
    )
    assert got == [
        'selectors.a: selector ID "a" conflicts with a model ID or alias',
        "selectors.nostrat.strategy: strategy is required (valid: warm, pin, spillover)",
        'selectors.weird.strategy: unknown strategy "random" (valid: warm, pin, spillover)',
        "selectors.weird.targets: must contain at least one target",
        'selectors.chain.targets[0]: target "nostrat" is a selector; selector chaining is not '
        "supported",
        'selectors.chain.targets[1]: unknown target "ghost"',
        'selectors.w.targets[0]: warm targets must be local models, "r" is not',
        'selectors.dup.targets[1]: targets "a" and "al" resolve to the same model "a"',
        "selectors.sp.settings.spillover: must be >= 1",
        "selectors.sp.targets: spillover local targets must be able to run at the same time "
        "(one group with swap: false, or one matrix set holding them all)",
    ]


def test_selector_spillover_with_matrix() -> None:
    text = (
        MODELS
        + "matrix: {sets: {s: 'a & b', t: c}}\n"
        + "selectors:\n  s1: {strategy: spillover, targets: [%s]}\n"
    )
    load(text % "a, b")
    assert messages(text % "a, c")[0].startswith("selectors.s1.targets: spillover local targets")
