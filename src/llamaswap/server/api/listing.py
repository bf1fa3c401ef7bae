"""The common shape of a `/v1/models` entry (spec §5.5), for models, peers, selectors, pins."""

from __future__ import annotations

from typing import Any

from llamaswap.config.model import CapabilitiesConfig

# Entry fields written from `capabilities`; same-named metadata keys give way to them.
CAPABILITY_METADATA_KEYS = (
    "architecture",
    "capabilities",
    "supported_parameters",
    "context_length",
)


def capability_fields(caps: CapabilitiesConfig) -> dict[str, Any]:
    """The OpenRouter-style fields llama-swap adds to an entry from `capabilities`.

    As llama-swap writes them: `architecture` has only the modality lists that are set (and
    `modality` only with both); `capabilities` holds only the true flags and is left out when
    none is true (so `context` alone gives just `context_length`).
    """
    inputs, out = set(caps.inputs), set(caps.out)
    fields: dict[str, Any] = {}
    if inputs or out:
        architecture: dict[str, Any] = {}
        if inputs:
            architecture["input_modalities"] = list(caps.inputs)
        if out:
            architecture["output_modalities"] = list(caps.out)
        if inputs and out:
            architecture["modality"] = "+".join(caps.inputs) + "->" + "+".join(caps.out)
        fields["architecture"] = architecture
    flags = {
        "vision": "image" in inputs,
        "audio_transcriptions": "audio" in inputs and "text" in out,
        "audio_speech": "text" in inputs and "audio" in out,
        "image_generation": "text" in inputs and "image" in out,
        "image_to_image": "image" in inputs and "image" in out,
        "function_calling": caps.tools,
        "reranker": caps.reranker,
    }
    if any(flags.values()):
        fields["capabilities"] = {name: True for name, on in flags.items() if on}
    if caps.tools:
        fields["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        fields["context_length"] = caps.context
    return fields


def list_entry(
    listed_id: str,
    now: int,
    *,
    name: str = "",
    description: str = "",
    meta: dict[str, Any] | None = None,
    loaded: bool | None = None,
) -> dict[str, Any]:
    """`{id, object, created, owned_by[, name][, description][, meta][, status]}`; empty
    name/description are left out, as llama-swap does."""
    entry: dict[str, Any] = {
        "id": listed_id,
        "object": "model",
        "created": now,
        "owned_by": "llama-swap",
    }
    if name:
        entry["name"] = name
    if description:
        entry["description"] = description
    if meta is not None:
        entry["meta"] = {"llamaswap": meta}
    if loaded is not None:
        entry["status"] = {"value": "loaded" if loaded else "unloaded"}
    return entry
