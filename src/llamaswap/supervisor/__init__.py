"""Supervisor: one owner per upstream process (start, health, stop).

`UpstreamProcess` is the entry point; `command` builds argv/env, `health` probes
readiness, `terminate` spawns and ends the child's process group.
"""

from llamaswap.supervisor.process import ProcessSpec, ProcessState, UpstreamProcess

__all__ = ["ProcessSpec", "ProcessState", "UpstreamProcess"]
