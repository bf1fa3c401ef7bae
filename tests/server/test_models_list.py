"""/v1/models entries: names, metadata, aliases, unlisted, status and capabilities."""

from __future__ import annotations

from typing import Any

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap

CONFIG = (
    "includeAliasesInList: true\n"
    + fake_models_yaml(["vision"])
    + "    name: '  Vision model  '\n"
    + "    aliases: [eyes]\n"
    + "    metadata: {family: gemma, context_length: 1}\n"
    + "    capabilities: {in: [text, image], out: [text], tools: true, context: 8192}\n"
    + fake_models_yaml(["hidden"]).replace("models:\n", "")
    + "    unlisted: true\n"
    + fake_models_yaml(["long"]).replace("models:\n", "")
    + "    metadata: {capabilities: {mine: true}}\n"
    + "    capabilities: {context: 32768}\n"
    + fake_models_yaml(["listener"]).replace("models:\n", "")
    + "    capabilities: {in: [audio]}\n"
)


async def listed(base: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/models") as resp:
        return {e["id"]: e for e in (await resp.json())["data"]}


async def test_entries_follow_the_config() -> None:
    async with running_llamaswap(CONFIG) as (base, _):
        entries = await listed(base)
    assert sorted(entries) == ["eyes", "listener", "long", "vision"]  # unlisted hidden
    vision = entries["vision"]
    assert vision["name"] == "Vision model"
    assert vision["owned_by"] == "llama-swap"
    assert vision["status"] == {"value": "unloaded"}
    assert vision["architecture"]["modality"] == "text+image->text"
    # Only the true flags, as llama-swap writes them.
    assert vision["capabilities"] == {"vision": True, "function_calling": True}
    assert vision["supported_parameters"] == ["tools", "tool_choice"]
    assert vision["context_length"] == 8192
    assert vision["meta"]["n_ctx"] == 8192
    # Configured capabilities replace the metadata key of the same name.
    assert vision["meta"]["llamaswap"] == {"family": "gemma", "type": "model", "aliases": ["eyes"]}
    assert entries["eyes"]["meta"]["llamaswap"]["type"] == "alias"
    # `context` alone: context_length and n_ctx, no capabilities or architecture object.
    long = entries["long"]
    assert long["context_length"] == 32768 and long["meta"]["n_ctx"] == 32768
    assert "capabilities" not in long and "architecture" not in long
    assert long["meta"]["llamaswap"] == {"type": "model"}  # the metadata key gave way
    # Inputs alone: the modality list that is set, no `modality`, no true flag.
    listener = entries["listener"]
    assert listener["architecture"] == {"input_modalities": ["audio"]}
    assert "capabilities" not in listener and "context_length" not in listener
    assert entries["eyes"]["meta"]["llamaswap"]["modelID"] == "vision"
