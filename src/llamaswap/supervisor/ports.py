"""Who holds an upstream's local port: never forward to a server that is not ours.

When a model's port is already taken, its own server cannot bind, yet the health probe
gets 200 from whatever holds the port and requests would go there. So, for upstreams on
this machine (`proxy` on 127.0.0.1, localhost or ::1):

1. before spawning, the port must be free (a trial bind, as the upstream itself would do);
2. after the health check succeeds, the listening socket must belong to the model's own
   process tree. A holder that cannot be seen (another user's process, e.g. a root
   `docker-proxy`) or that appeared after the spawn (a helper that a container runtime
   reparented away from the tree) is accepted: only a process that was already running
   before the spawn is an impostor.

Both steps read the process table (psutil, i.e. `/proc` on Linux), so they run in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psutil

if TYPE_CHECKING:  # private module; the stubs name the tuple types there
    from psutil._ntuples import pconn, sconn

from llamaswap.errors import StartError

__all__ = ["Holder", "LocalPort", "check_port_free", "confirm_owner", "local_port"]

_LOOPBACK = {"127.0.0.1": socket.AF_INET, "localhost": socket.AF_INET, "::1": socket.AF_INET6}
# Start times come from /proc in clock ticks (10 ms); allow for that much rounding.
_CREATE_TIME_SLACK = 0.05


@dataclass(frozen=True)
class LocalPort:
    """An upstream's listening address on this machine."""

    host: str
    family: socket.AddressFamily
    port: int


@dataclass(frozen=True)
class Holder:
    """The process listening on a port (pid and name when it can be seen)."""

    pid: int | None
    name: str
    create_time: float | None

    def __str__(self) -> str:
        if self.pid is None:
            return "a process that cannot be inspected"
        return f"pid {self.pid} ({self.name})"


def local_port(proxy: str) -> LocalPort | None:
    """The loopback host and port of a `proxy` URL, or None for a remote or odd URL."""
    try:
        parts = urlsplit(proxy)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    family = _LOOPBACK.get(host)
    if family is None:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return LocalPort("::1" if family is socket.AF_INET6 else "127.0.0.1", family, port)


def _bind_fails(where: LocalPort) -> bool:
    """True when binding the port fails the way the upstream's own bind would."""
    with socket.socket(where.family, socket.SOCK_STREAM) as sock:
        # Like a server: SO_REUSEADDR, so a socket in TIME_WAIT (our last child) is no holder.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((where.host, where.port))
        except OSError as exc:
            # Only "in use" counts: a privileged port or a missing ::1 says nothing of holders.
            return exc.errno == errno.EADDRINUSE
    return False


def _listens_on(conns: list[sconn] | list[pconn], port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def find_holder(port: int) -> Holder | None:
    """The process listening on TCP `port` (any address), or None when nothing listens."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        conns = []
    listening = [c for c in conns if _listens_on([c], port)]
    if not listening:
        return None
    pids = [c.pid for c in listening if c.pid is not None]
    if not pids:
        return Holder(None, "", None)
    try:
        proc = psutil.Process(pids[0])
        return Holder(proc.pid, proc.name(), proc.create_time())
    except psutil.Error:
        return Holder(pids[0], "?", None)


def check_port_free(where: LocalPort) -> None:
    """Raise `StartError` naming the port and its holder when `where` cannot be bound."""
    if not _bind_fails(where):
        return
    holder = find_holder(where.port)
    held_by = f"held by {holder}" if holder is not None else "it cannot be bound"
    raise StartError(
        f"port {where.port} is already in use: {held_by}; not starting the upstream "
        "(requests would reach a server that is not ours)"
    )


def _tree_listens(child_pid: int, port: int) -> bool:
    """True when the child or one of its descendants listens on `port` (cheap: our tree only)."""
    try:
        root = psutil.Process(child_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if _listens_on(proc.net_connections(kind="tcp"), port):
                return True
    return False


def confirm_owner(where: LocalPort, child_pid: int, spawned_at: float) -> None:
    """After a healthy probe: raise `StartError` when what answered is not ours.

    `spawned_at` is the wall-clock time (time.time()) just before the child was spawned.
    """
    if _tree_listens(child_pid, where.port):
        return
    holder = find_holder(where.port)
    if holder is None or holder.pid is None or holder.create_time is None:
        return  # nothing visible listens (NAT, another user's helper): cannot tell; trust
    if holder.create_time >= spawned_at - _CREATE_TIME_SLACK:
        return  # started after our child: a helper of its own (container runtimes)
    raise StartError(
        f"the health check on port {where.port} was answered by {holder}, "
        f"which is not the model's process; not forwarding to a server that is not ours"
    )
