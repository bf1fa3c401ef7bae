"""Serving one request on a local model: take a lease, forward, release.

The lease is held for the whole exchange with the upstream (until the last byte is sent or
the client leaves), so the model cannot be stopped under the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import orjson
from aiohttp import web

from llamaswap.errors import ModelNotFound, RequestError
from llamaswap.router import Lease
from llamaswap.server.proxy.forward import forward
from llamaswap.server.proxy.loading import LoadingStream
from llamaswap.server.proxy.recording import Recorder, record_exchange, request_metadata
from llamaswap.server.responses import error_body
from llamaswap.server.state import AppState


async def serve_model(
    request: web.Request,
    state: AppState,
    model_id: str,
    path: str,
    body: bytes | None,
    loading: LoadingStream | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Hold a lease on `model_id` for the whole exchange with its upstream.

    `headers` replace the client's (e.g. the Content-Type of a rebuilt multipart form).
    Model-route POSTs are recorded in the activity store (see `recording`)."""
    with state.inflight.track(request, model_id, state.router.events):
        return await record_exchange(
            request,
            state,
            model_id,
            path,
            body,
            lambda recorder: _serve_leased(
                request, state, model_id, path, body, loading, headers, recorder
            ),
            headers,
        )


async def _serve_leased(
    request: web.Request,
    state: AppState,
    model_id: str,
    path: str,
    body: bytes | None,
    loading: LoadingStream | None,
    headers: Mapping[str, str] | None,
    recorder: Recorder | None,
) -> web.StreamResponse:
    lease: Lease | None
    if loading is None:
        lease = await state.router.acquire(model_id)
    else:
        lease = await _acquire_with_progress(state, model_id, loading, recorder)
    if lease is None:
        assert loading is not None
        return loading.response
    # llama-swap sets this on grant, from the scheduler's priority table.
    request_metadata(request)["fifo_priority"] = str(state.config.fifo_priority(model_id))
    try:
        if state.before_forward is not None:
            await state.before_forward(model_id)
        assert state.session is not None
        return await forward(
            request,
            state.session,
            base_url=lease.upstream,
            path=path,
            body=body,
            connect_timeout=lease.connect_timeout,
            header_timeout=lease.header_timeout,
            into=loading.response if loading is not None else None,
            extra_headers=headers,
            tap=recorder,
            keep_host=True,
            client=state.upstream_client,
        )
    finally:
        lease.release()


async def _acquire_with_progress(
    state: AppState, model_id: str, loading: LoadingStream, recorder: Recorder | None
) -> Lease | None:
    """Acquire while streaming progress. Admission (429) is decided before the stream starts;
    a later failure is written into the stream (then None is returned)."""
    acquiring = asyncio.create_task(state.router.acquire(model_id, loading.queue_position))
    try:
        await asyncio.sleep(0)  # let the scheduler admit or reject synchronously first
        if acquiring.done():
            return acquiring.result()  # granted at once, or raises 429/404 as a normal error
        async with loading:
            try:
                lease = await acquiring
            except RequestError as exc:
                if recorder is not None:
                    recorder.fail(exc.status, exc.message)
                await loading.fail(orjson.dumps(error_body(exc.status, exc.message, code=exc.code)))
                return None
            await loading.finish()
            return lease
    except BaseException:
        # Cancelled (client left) or the stream broke: give up the place in the queue, or
        # the lease if it was granted already — never leave one held by nobody.
        acquiring.cancel()
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            acquiring.result().release()
        raise


def resolve_local(state: AppState, requested: str | None) -> str:
    if not requested:
        raise ModelNotFound("no model id could be identified")
    model_id = state.config.resolve_model(requested)
    if model_id is None:
        raise ModelNotFound("no local server found for requested model")
    return model_id
