"""Peers: remote OpenAI-compatible servers reached by name, with no lifecycle of their own.

A peer model answers to `<peer>/<model>` and, when exactly one peer offers it and no local
model or alias has the name, to its bare `<model>`. Local names always win. The request's
`model` is rewritten to the peer's bare model ID, the peer's filters apply, and its `apiKey`
(when set) replaces the client's credentials. Peer failures are 502 `peer proxy error: …`.

`/upstream/<peer>/<model>/<path>` forwards `<path>` to the peer's `proxy` as it is (body
untouched, websockets joined), with the same credentials.
"""

from __future__ import annotations

from aiohttp import web

from llamaswap.config.model import Config
from llamaswap.config.names import peer_names
from llamaswap.server.extract import BodyKind
from llamaswap.server.filters import shape_body
from llamaswap.server.proxy.forward import forward
from llamaswap.server.proxy.recording import record_exchange
from llamaswap.server.proxy.websocket import is_websocket_upgrade, proxy_websocket
from llamaswap.server.state import AppState


def resolve_peer(config: Config, name: str) -> tuple[str, str] | None:
    """(peer ID, peer's model ID) for a name no local model or alias claims, else None."""
    if not config.peers:
        return None
    # Only reached when no local name matched; peer lists are small, so no cache.
    return peer_names(config).get(name)


def peer_auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "x-api-key": api_key} if api_key else {}


async def serve_peer(
    request: web.Request,
    state: AppState,
    peer_id: str,
    model: str,
    kind: BodyKind,
    path: str,
    body: bytes,
) -> web.StreamResponse:
    peer = state.config.peers[peer_id]
    body, changed_headers = shape_body(
        kind,
        body,
        request.headers.get("Content-Type", ""),
        use_model_name=model,
        strip_params=peer.filters.strip_params,
        set_params=peer.filters.set_params,
        set_params_by_id=None,
    )
    assert state.session is not None
    session = state.session
    headers = {**changed_headers, **peer_auth_headers(peer.api_key)}
    name = f"{peer_id}/{model}"
    # Listed in flight (and cancellable) like a local model's request.
    with state.inflight.track(request, name, state.router.events):
        return await record_exchange(
            request,
            state,
            name,
            path,
            body,
            lambda tap: forward(
                request,
                session,
                base_url=peer.proxy,
                path=path,
                body=body,
                connect_timeout=float(peer.timeouts.connect),
                header_timeout=float(peer.timeouts.response_header),
                extra_headers=headers,
                error_prefix="peer proxy error",
                tap=tap,
                client=state.upstream_client,
            ),
            changed_headers,
        )


async def serve_peer_raw(
    request: web.Request, state: AppState, peer_id: str, path: str
) -> web.StreamResponse:
    """`/upstream/<peer model>/<path>`: the request as it is, to the peer's `proxy` + `path`."""
    peer = state.config.peers[peer_id]
    assert state.session is not None
    auth = peer_auth_headers(peer.api_key)
    if is_websocket_upgrade(request):
        return await proxy_websocket(
            request,
            state.session,
            base_url=peer.proxy,
            path=path,
            extra_headers=auth,
            error_prefix="peer proxy error",
        )
    return await forward(
        request,
        state.session,
        base_url=peer.proxy,
        path=path,
        body=await request.read(),
        connect_timeout=float(peer.timeouts.connect),
        header_timeout=float(peer.timeouts.response_header),
        extra_headers=auth,
        error_prefix="peer proxy error",
    )
