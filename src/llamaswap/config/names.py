"""Validation of the names requests may use besides model IDs: peers, profiles, selectors. Pure.

A peer model is addressable as `<peerID>/<modelID>` and, when exactly one peer offers it and
no such full name equals it, by its bare model ID. Local IDs and aliases win over peer names.
"""

from __future__ import annotations

from collections.abc import Iterator

from llamaswap.config.model import Config
from llamaswap.errors import ConfigProblem

STRATEGIES = ("warm", "pin", "spillover")


def peer_names(config: Config) -> dict[str, tuple[str, str]]:
    """Every name a peer model answers to -> (peer ID, the peer's model ID)."""
    full: dict[str, tuple[str, str]] = {}
    offered: dict[str, list[tuple[str, str]]] = {}
    for peer_id in sorted(config.peers):
        for model in config.peers[peer_id].models:
            full.setdefault(f"{peer_id}/{model}", (peer_id, model))
            offered.setdefault(model, []).append((peer_id, model))
    bare = {m: owners[0] for m, owners in offered.items() if len(owners) == 1 and m not in full}
    return {**bare, **full}


def validate_names(config: Config) -> Iterator[ConfigProblem]:
    """Problems with peers, profiles and selectors."""
    yield from _peers(config)
    yield from _profiles(config)
    yield from _selectors(config)


def _peers(config: Config) -> Iterator[ConfigProblem]:
    from llamaswap.config.validate import url_problem  # noqa: PLC0415 - validate imports us

    owner: dict[str, tuple[str, str]] = {}
    pins = {pin: name for name, p in config.profiles.items() for pin in p.pins}
    for peer_id in sorted(config.peers):
        peer = config.peers[peer_id]
        where = f"peers.{peer_id}"
        if not peer.proxy:
            yield ConfigProblem(f"{where}.proxy", "proxy is required")
        elif (why := url_problem(peer.proxy)) is not None:
            yield ConfigProblem(f"{where}.proxy", f"invalid peer proxy URL ({peer.proxy}): {why}")
        if not peer.models:
            yield ConfigProblem(f"{where}.models", "peer models can not be empty")
        for model in peer.models:
            fqn = f"{peer_id}/{model}"
            if fqn in owner:
                other, other_model = owner[fqn]
                yield ConfigProblem(
                    f"{where}.models",
                    f'peer model name "{fqn}" is ambiguous between peers.{other} model '
                    f'"{other_model}" and peers.{peer_id} model "{model}"',
                )
                continue
            owner[fqn] = (peer_id, model)
            clash = None
            if config.resolve_model(fqn) is not None:
                clash = "a local model ID or alias"
            elif fqn in config.selectors:
                clash = "a selector ID"
            elif fqn in pins:
                clash = f'a pin of profile "{pins[fqn]}"'
            if clash:
                yield ConfigProblem(
                    f"{where}.models", f'peer model name "{fqn}" conflicts with {clash}'
                )


def _profiles(config: Config) -> Iterator[ConfigProblem]:
    peers = peer_names(config)
    for name, profile in config.profiles.items():
        if not name.strip():
            yield ConfigProblem("profiles", "profile names cannot be empty")
            continue
        where = f"profiles.{name}.pins"
        if not profile.pins:
            yield ConfigProblem(where, "must contain at least one entry")
        for pin, target in profile.pins.items():
            if not pin.strip():
                yield ConfigProblem(where, "pin names cannot be empty")
            elif target and not (
                config.resolve_model(target) is not None
                or target in peers
                or target in config.selectors
            ):
                # Pins do not chain: a target naming another pin is unknown too.
                yield ConfigProblem(f"{where}.{pin}", f'references unknown model "{target}"')


def _selectors(config: Config) -> Iterator[ConfigProblem]:
    peers = peer_names(config)
    for sel_id, sel in config.selectors.items():
        where = f"selectors.{sel_id}"
        if not sel_id.strip():
            yield ConfigProblem("selectors", "selector IDs cannot be empty")
            continue
        if config.resolve_model(sel_id) is not None:
            yield ConfigProblem(where, f'selector ID "{sel_id}" conflicts with a model ID or alias')
        if sel.strategy not in STRATEGIES:
            what = f'unknown strategy "{sel.strategy}"' if sel.strategy else "strategy is required"
            yield ConfigProblem(f"{where}.strategy", f"{what} (valid: {', '.join(STRATEGIES)})")
        if not sel.targets:
            yield ConfigProblem(f"{where}.targets", "must contain at least one target")
        if sel.strategy == "spillover" and sel.settings.spillover < 1:
            yield ConfigProblem(f"{where}.settings.spillover", "must be >= 1")
        resolved: dict[str, str] = {}
        local: list[str] = []
        for i, target in enumerate(sel.targets):
            at = f"{where}.targets[{i}]"
            model_id = config.resolve_model(target)
            if model_id is None and target in config.selectors:
                yield ConfigProblem(
                    at, f'target "{target}" is a selector; selector chaining is not supported'
                )
                continue
            if model_id is None and target not in peers:
                yield ConfigProblem(at, f'unknown target "{target}"')
                continue
            if model_id is None and sel.strategy == "warm":
                yield ConfigProblem(at, f'warm targets must be local models, "{target}" is not')
            key = model_id if model_id is not None else "/".join(peers[target])
            if key in resolved:
                yield ConfigProblem(
                    at,
                    f'targets "{resolved[key]}" and "{target}" resolve to the same model "{key}"',
                )
                continue
            resolved[key] = target
            if model_id is not None:
                local.append(model_id)
        if sel.strategy == "spillover" and len(local) > 1 and not _can_coexist(config, local):
            yield ConfigProblem(
                f"{where}.targets",
                "spillover local targets must be able to run at the same time "
                "(one group with swap: false, or one matrix set holding them all)",
            )


def _can_coexist(config: Config, models: list[str]) -> bool:
    if config.uses_matrix():
        compiled = config._matrix
        return compiled is None or compiled.can_coexist(models)  # None: already reported
    for group in config.group_map().values():
        if not group.swap and set(models) <= set(group.members):
            return True
    return False
