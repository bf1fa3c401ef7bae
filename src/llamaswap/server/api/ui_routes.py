"""The web UI: static HTML/CSS/ES modules from the `llamaswap.ui` package under `/ui`.

`/ui` and `/ui/` answer `index.html`; `/ui/<file>` answers that file. A missing path with a
file extension is a 404 (the usual error envelope); any other path falls back to
`index.html` so client-side routes such as `/ui/models` (where `GET /upstream` redirects)
load the app. `GET /favicon.ico` answers the packaged icon. These files hold no data, so
the auth middleware lets them through without a key (`auth.route_needs_auth`); every API
call the page makes needs one.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from aiohttp import web

from llamaswap.server.responses import error_response

__all__ = ["add_routes", "ui_file"]

INDEX = "index.html"
FAVICON = "favicon.ico"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def _root() -> Traversable:
    return resources.files("llamaswap").joinpath("ui")


def ui_file(tail: str) -> Traversable | None:
    """The packaged file at `tail` (relative to the UI folder), or None; no `..` escapes."""
    parts = [p for p in PurePosixPath(tail).parts if p not in ("", "/", ".")]
    if any(p == ".." or "\\" in p or p.startswith(".") for p in parts):
        return None
    node = _root()
    for part in parts:
        node = node.joinpath(part)
    try:
        return node if parts and node.is_file() else None
    except (OSError, ValueError):  # e.g. a segment longer than the file system allows
        return None


def _serve(node: Traversable, name: str) -> web.Response:
    suffix = PurePosixPath(name).suffix.lower()
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    charset = "utf-8" if content_type.startswith("text/") or suffix == ".json" else None
    return web.Response(
        body=node.read_bytes(),
        content_type=content_type,
        charset=charset,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def _index(_: web.Request) -> web.Response:
    node = ui_file(INDEX)
    if node is None:  # pragma: no cover - a packaging error
        raise web.HTTPNotFound()
    return _serve(node, INDEX)


async def _static(request: web.Request) -> web.Response:
    tail = request.match_info.get("tail", "")
    node = ui_file(tail)
    if node is not None:
        return _serve(node, tail)
    if PurePosixPath(tail).suffix:
        return error_response(request.headers.get("Accept", ""), 404, "404 page not found")
    return await _index(request)


async def _favicon(_: web.Request) -> web.Response:
    node = ui_file(FAVICON)
    if node is None:  # pragma: no cover - a packaging error
        raise web.HTTPNotFound()
    return _serve(node, FAVICON)


def add_routes(app: web.Application) -> None:
    """Install `GET|HEAD /ui`, `/ui/`, `/ui/<path…>` and `/favicon.ico`."""
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_get("/ui", _index)
    app.router.add_get("/ui/", _index)
    app.router.add_get("/ui/{tail:.+}", _static)
