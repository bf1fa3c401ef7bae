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
)


async def listed(base: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/models") as resp:
        return {e["id"]: e for e in (await resp.json())["data"]}


async def test_entries_follow_the_config() -> None:
    async with running_llamaswap(CONFIG) as (base, _):
        entries = await listed(base)
    assert sorted(entries) == ["eyes", "vision"]  # unlisted hidden; alias listed
    vision = entries["vision"]
    assert vision["name"] == "Vision model"
    assert vision["owned_by"] == "llama-swap"
    assert vision["status"] == {"value": "unloaded"}
    assert vision["architecture"]["modality"] == "text+image->text"
    assert vision["capabilities"]["vision"] is True
    assert vision["capabilities"]["function_calling"] is True
    assert vision["capabilities"]["audio_speech"] is False
    assert vision["supported_parameters"] == ["tools", "tool_choice"]
    assert vision["context_length"] == 8192
    assert vision["meta"]["n_ctx"] == 8192
    # Configured capabilities replace the metadata key of the same name.
    assert vision["meta"]["llamaswap"] == {"family": "gemma", "type": "model", "aliases": ["eyes"]}
    assert entries["eyes"]["meta"]["llamaswap"]["type"] == "alias"
    assert entries["eyes"]["meta"]["llamaswap"]["modelID"] == "vision"
