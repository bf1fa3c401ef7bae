"""The scheduler's view of one model's lifecycle."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    # The process runs with its device memory freed (a sleep tier such as vLLM's sleep mode);
    # it holds host memory and is woken, not started, when asked for.
    ASLEEP = "asleep"
