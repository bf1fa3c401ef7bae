"""Fuzz: the YAML 1.2 loader (llama-swap's rules) against PyYAML's YAML 1.1 `safe_load`.

On documents where the two schemas agree (plain words, decimal ints, floats with a point,
true/false/null, lists, maps), the new loader must give exactly what the old one gave; the
places where they differ are tested one by one in tests/config/test_yaml.py.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamaswap.config.load import parse_yaml
from llamaswap.config.yaml12 import load_first, loader_on

PURE = loader_on(yaml.SafeLoader)

# Words no schema reads as anything but a string (no y/n/on/off/null spellings, no digits first).
WORDS = st.from_regex(r"[a-h][a-h0-9_ .-]{0,12}", fullmatch=True).map(str.rstrip)
SCALARS = st.one_of(
    WORDS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(WORDS, inner, max_size=5)),
    max_leaves=40,
)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (1 == 1.0 == True does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, flow=st.sampled_from([None, True, False]))
def test_new_loader_agrees_with_yaml_1_1_where_the_schemas_agree(tree: Any, flow: Any) -> None:
    text = yaml.safe_dump({"root": tree}, default_flow_style=flow, sort_keys=False)
    new = parse_yaml(text)
    assert _same(new, yaml.safe_load(text)), text
    assert _same(load_first(text, PURE), new), text  # without libyaml too
