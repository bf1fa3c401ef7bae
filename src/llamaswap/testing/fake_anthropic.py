"""Anthropic Messages API answers for the fake upstream (`POST /v1/messages`).

Non-streaming: one `message` object. Streaming: the event sequence the Anthropic SDK expects
(`message_start`, `content_block_start`, `content_block_delta` × N, `content_block_stop`,
`message_delta`, `message_stop`), each as `event: <type>` + `data: <json>`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

WORDS = 5


def _message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{os.getpid()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn" if text else None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": WORDS if text else 0},
        "pid": os.getpid(),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def messages(request: web.Request, model: str, respond: str) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or not body.get("stream"):
        return web.json_response(_message(model, respond))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_event("message_start", {"message": _message(model, "")}))
    await response.write(
        _event(
            "content_block_start",
            {"index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for _ in range(WORDS):
        delta = {"index": 0, "delta": {"type": "text_delta", "text": respond}}
        await response.write(_event("content_block_delta", delta))
    await response.write(_event("content_block_stop", {"index": 0}))
    await response.write(
        _event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": WORDS},
            },
        )
    )
    await response.write(_event("message_stop", {}))
    await response.write_eof()
    return response
