"""The packaged UI files over plain HTTP (no browser): index, SPA fallback, 404s, favicon."""

from __future__ import annotations

import aiohttp

from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.server.api.ui_routes import ui_file


async def test_ui_files_fallback_and_misses() -> None:
    config = fake_models_yaml(["a"]) + "apiKeys: [secret]\n"
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str, bytes]:
            async with session.get(base + path) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

        status, kind, index = await get("/ui/")
        assert (status, kind.split(";")[0]) == (200, "text/html")
        assert (await get("/ui/models"))[2] == index  # client-side route: the SPA's index
        assert (await get("/ui/missing.js"))[0] == 404
        escaped = await get("/ui/%2E%2E/server/app.py")  # normalised away from /ui: needs a key
        assert escaped[0] in (401, 404) and b"import" not in escaped[2]
        favicon = await get("/favicon.ico")  # open, like the UI files, even with apiKeys
        assert favicon[:2] == (200, "image/x-icon") and favicon[2]
        # Regression: a segment longer than the file system allows made is_file() raise (500).
        assert (await get("/ui/" + "a" * 300))[2] == index
        assert (await get("/ui/" + "a" * 300 + ".js"))[0] == 404


def test_ui_file_refuses_escapes_and_hidden_files() -> None:
    assert ui_file("../server/app.py") is None
    assert ui_file(".hidden") is None
    assert ui_file("a\\b") is None
    assert ui_file("x" * 4000) is None
    assert ui_file("index.html") is not None
