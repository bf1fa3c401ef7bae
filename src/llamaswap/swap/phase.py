"""The scheduler's view of one model's lifecycle."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
