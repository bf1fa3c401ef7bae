"""Every node's `/api/events` as one SSE stream, each event's data carrying its `node`.

Pure (no Ray): the ingress opens one stream per node, this tags and merges them. A node's
frames are `event:message\\ndata:{"type": ..., "data": "<payload>"}` (observe_routes); the
envelope gains `"node"`, the payload is left as the node sent it (model IDs may repeat
across nodes, the envelope tells them apart). The merged stream ends when any node's stream
ends (that node stopped or died): an EventSource reconnects and gets every node's snapshot
again, rather than a stream silently missing one node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import orjson

FRAME_END = b"\n\n"


def tag_frame(frame: bytes, node: str) -> bytes:
    """One SSE frame (without its blank line) with `"node"` added to its JSON data; a frame
    with no JSON object as data (a comment, a keep-alive) is passed on unchanged."""
    lines = frame.split(b"\n")
    for i, line in enumerate(lines):
        if not line.startswith(b"data:"):
            continue
        try:
            data = orjson.loads(line[len(b"data:") :])
        except orjson.JSONDecodeError:
            return frame
        if not isinstance(data, dict):
            return frame
        lines[i] = b"data:" + orjson.dumps({**data, "node": node})
        return b"\n".join(lines)
    return frame


async def tagged_frames(chunks: AsyncIterator[bytes], node: str) -> AsyncIterator[bytes]:
    """Whole frames of one node's stream, tagged; chunks may split frames anywhere."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *frames, pending = pending.split(FRAME_END)
        for frame in frames:
            if frame.strip():
                yield tag_frame(frame, node) + FRAME_END


async def merged(
    streams: Sequence[tuple[str, AsyncIterator[bytes]]],
) -> AsyncGenerator[bytes, None]:
    """Frames of every `(node, chunks)` stream as they come, until any of them ends."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump(node: str, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for frame in tagged_frames(chunks, node):
                await queue.put(frame)
        finally:
            queue.put_nowait(None)  # this node's stream ended (or failed): end them all

    tasks = [asyncio.create_task(pump(node, chunks)) for node, chunks in streams]
    try:
        while (frame := await queue.get()) is not None:
            yield frame
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
