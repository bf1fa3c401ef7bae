"""Request/response captures: a size-bounded FIFO keyed by activity id (spec §6.1).

`captureBuffer` MiB of captures are kept (0 disables them). Adding a capture evicts the
oldest ones until it fits; a capture larger than the whole buffer is not kept at all (its
activity row then says `has_capture: false`). A capture's size is the bytes of its path,
headers and bodies as stored: uncompressed (llama-swap [H] counts CBOR+zstd-compressed
bytes, so the same setting holds fewer captures here; in exchange a capture is served
without decoding and storing one costs no CPU on the event loop).

Which parts are kept depends on the model route (`capture_fields`): media routes skip the
bodies that are large binary blobs. Headers arrive already single-valued and redacted (the
server layer owns the list of sensitive headers); bodies are served base64-encoded, as Go
encodes byte slices, and a part that was not captured is `null`.
"""

from __future__ import annotations

import base64
import enum
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Capture", "CaptureBuffer", "CaptureFields", "capture_fields"]

MIB = 1024 * 1024


class CaptureFields(enum.Flag):
    """Which parts of an exchange a capture keeps."""

    NONE = 0
    REQ_HEADERS = enum.auto()
    REQ_BODY = enum.auto()
    RESP_HEADERS = enum.auto()
    RESP_BODY = enum.auto()
    REQUEST = REQ_HEADERS | REQ_BODY
    HEADERS = REQ_HEADERS | RESP_HEADERS
    ALL = REQ_HEADERS | REQ_BODY | RESP_HEADERS | RESP_BODY


# Per-path masks of llama-swap [H]; every other path keeps everything.
_MASKS: dict[str, CaptureFields] = {
    "/v1/audio/speech": CaptureFields.REQUEST | CaptureFields.RESP_HEADERS,
    "/v1/audio/voices": CaptureFields.REQ_HEADERS
    | CaptureFields.RESP_HEADERS
    | CaptureFields.RESP_BODY,
    "/v1/audio/transcriptions": CaptureFields.REQ_HEADERS
    | CaptureFields.RESP_HEADERS
    | CaptureFields.RESP_BODY,
    "/v1/images/generations": CaptureFields.REQUEST | CaptureFields.RESP_HEADERS,
    "/v1/images/edits": CaptureFields.HEADERS,
    "/sdapi/v1/txt2img": CaptureFields.REQUEST | CaptureFields.RESP_HEADERS,
    "/sdapi/v1/img2img": CaptureFields.HEADERS,
}


def capture_fields(path: str, status: int = 200) -> CaptureFields:
    """The parts kept for a model route `path`; a failed exchange keeps its request only."""
    mask = _MASKS.get(path, CaptureFields.ALL)
    return mask & CaptureFields.REQUEST if status != 200 else mask


@dataclass(frozen=True, slots=True)
class Capture:
    """One captured exchange; None marks a part that was not captured."""

    id: int
    req_path: str
    req_headers: Mapping[str, str] | None = None
    req_body: bytes | None = field(default=None, repr=False)
    resp_headers: Mapping[str, str] | None = None
    resp_body: bytes | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        id: int,
        req_path: str,
        fields: CaptureFields,
        *,
        req_headers: Mapping[str, str],
        req_body: bytes,
        resp_headers: Mapping[str, str],
        resp_body: bytes,
    ) -> Capture:
        """A capture of the parts in `fields` only."""

        def keep(part: CaptureFields, value: Any) -> Any:
            return value if part in fields else None

        return cls(
            id,
            req_path,
            keep(CaptureFields.REQ_HEADERS, dict(req_headers)),
            keep(CaptureFields.REQ_BODY, req_body),
            keep(CaptureFields.RESP_HEADERS, dict(resp_headers)),
            keep(CaptureFields.RESP_BODY, resp_body),
        )

    def size(self) -> int:
        """Bytes counted against the buffer: path, header names and values, bodies."""
        total = len(self.req_path.encode())
        for headers in (self.req_headers, self.resp_headers):
            for name, value in (headers or {}).items():
                total += len(name.encode()) + len(value.encode())
        return total + len(self.req_body or b"") + len(self.resp_body or b"")

    def as_json(self) -> dict[str, Any]:
        """`{id, req_path, req_headers, req_body, resp_headers, resp_body}`, bodies base64."""
        return {
            "id": self.id,
            "req_path": self.req_path,
            "req_headers": dict(self.req_headers) if self.req_headers is not None else None,
            "req_body": _b64(self.req_body),
            "resp_headers": dict(self.resp_headers) if self.resp_headers is not None else None,
            "resp_body": _b64(self.resp_body),
        }


def _b64(body: bytes | None) -> str | None:
    return base64.b64encode(body).decode("ascii") if body is not None else None


class CaptureBuffer:
    """Captures by id, oldest evicted first, at most `capacity` bytes in all (0 = disabled)."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[int, tuple[Capture, int]] = OrderedDict()
        self._used = 0
        self.capacity = max(0, capacity)

    @classmethod
    def from_mib(cls, mib: int) -> CaptureBuffer:
        return cls(max(0, mib) * MIB)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, capture_id: object) -> bool:
        return capture_id in self._items

    def add(self, capture: Capture) -> bool:
        """Keep `capture`, evicting the oldest as needed; False when it can never fit."""
        size = capture.size()
        if not self.enabled or size > self.capacity:
            return False
        self._drop(capture.id)
        self._items[capture.id] = (capture, size)
        self._used += size
        self._shrink()
        return True

    def get(self, capture_id: int) -> Capture | None:
        item = self._items.get(capture_id)
        return item[0] if item is not None else None

    def resize(self, capacity: int) -> None:
        """A new limit (e.g. after a config reload); evicts the oldest until it holds."""
        self.capacity = max(0, capacity)
        self._shrink()

    def _shrink(self) -> None:
        while self._used > self.capacity and self._items:
            _, (_, size) = self._items.popitem(last=False)
            self._used -= size

    def _drop(self, capture_id: int) -> None:
        item = self._items.pop(capture_id, None)
        if item is not None:
            self._used -= item[1]
