"""Multipart routes: the model comes from the form; useModelName rewrites it upstream."""

from __future__ import annotations

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap

CONFIG = (
    fake_models_yaml(["whisper"])
    + "    useModelName: whisper-large-v3\n"
    + fake_models_yaml(["plain"]).replace("models:\n", "")
)


def transcription_form(model: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("model", model)
    form.add_field("file", b"\x00\x01" * 500, filename="a.wav", content_type="audio/wav")
    return form


async def test_form_model_routes_and_use_model_name_rewrites_it() -> None:
    async with running_llamaswap(CONFIG) as (base, _), aiohttp.ClientSession() as session:
        url = f"{base}/v1/audio/transcriptions"
        async with session.post(url, data=transcription_form("whisper")) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        # Regression: the rebuilt form used to make the handler clone a consumed request (500).
        assert answer["model"] == "whisper-large-v3"
        assert answer["text"] == "The length of the file is 1000 bytes"
        async with session.post(url, data=transcription_form("plain")) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["model"] == "plain"
