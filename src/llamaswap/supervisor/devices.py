"""Giving a placed model its device(s): the `${GPU}` macro and `CUDA_VISIBLE_DEVICES`. Pure.

Placement picks device names; the supervisor turns their runtime indices into the text of
`${GPU}` (comma-separated, as CUDA and HIP take lists) and into the visibility variables,
which are set only when the model's own `env` does not set them: the user stays in control.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from llamaswap.config.resources import DeviceConfig, device_index

__all__ = ["VISIBILITY_VARIABLES", "device_env", "runtime_indices", "substitute_gpu"]

VISIBILITY_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def _listing(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices)


def runtime_indices(declared: Mapping[str, DeviceConfig], names: Iterable[str]) -> tuple[int, ...]:
    """The runtime indices of devices `names`: declared ones by their `index` (or name),
    detected ones (`gpu<index>`, not declared) by the digits of their name."""
    return tuple(
        device_index(declared, n) if n in declared else int(n.removeprefix("gpu")) for n in names
    )


def substitute_gpu(text: str, indices: Sequence[int]) -> str:
    """Replace every `${GPU}` in `text` with the indices, comma-separated ("" when none)."""
    return text.replace("${GPU}", _listing(indices))


def device_env(env: Iterable[str], indices: Sequence[int] | None) -> list[str]:
    """The model's `env` entries with `${GPU}` filled, plus the visibility variables it lacks.

    `indices` None means the model was not placed (no devices known): nothing is added, and
    `${GPU}` becomes empty.
    """
    entries = [substitute_gpu(e, indices or ()) for e in env]
    if indices is None:
        return entries
    named = {e.partition("=")[0] for e in entries}
    return entries + [f"{v}={_listing(indices)}" for v in VISIBILITY_VARIABLES if v not in named]
