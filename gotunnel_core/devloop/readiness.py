"""Waiting until the dev server accepts connections, and finding its port when it ignored ours.

`wait_listening` polls (with a deadline) for a TCP connection on 127.0.0.1 and ::1 (Node's
`localhost` is often ::1 only). Meanwhile it looks at the sockets the child's process tree listens
on (psutil): when the expected port stays closed but the tree listens elsewhere for a moment, that
port is the app's. It fails early when the child exits first.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import RuntimeFailure

#: How long the tree must listen elsewhere while our port stays closed before we take that port:
#: a server may open a side port (an inspector, a livereload socket) before its main one.
DISCOVERY_GRACE = 1.5


@dataclass(frozen=True)
class Listening:
    """Where the app accepts connections: the backend host (an IP literal) and port."""

    host: str
    port: int
    discovered: bool = False  # True when found in the process tree, not the port we asked for

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def accepting_host(port: int, timeout: float = 0.25) -> str | None:
    """127.0.0.1 or ::1, whichever accepts a TCP connection on `port` first; None if neither."""
    for host in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return host
        except OSError:
            continue
    return None


def tree_listening_ports(pid: int) -> set[int]:
    """TCP ports the process `pid` and its descendants listen on (those psutil may inspect)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    ports: set[int] = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
        except psutil.Error:
            continue
        ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr)
    return ports


def wait_listening(port: int, child_pid: int, child_exited: Callable[[], int | None], deadline_s: float,
                   interval: float = 0.1) -> Listening:
    """Block until the app listens (see the module docstring); RuntimeFailure when the child exits
    first or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    elsewhere_since: float | None = None
    while True:
        code = child_exited()
        if code is not None:
            raise ChildExited(code)
        host = accepting_host(port)
        if host is not None:
            return Listening(host, port)
        others = sorted(tree_listening_ports(child_pid) - {port})
        now = time.monotonic()
        if others:
            elsewhere_since = elsewhere_since or now
            if now - elsewhere_since >= DISCOVERY_GRACE:
                for other in others:
                    host = accepting_host(other)
                    if host is not None:
                        return Listening(host, other, discovered=True)
        else:
            elsewhere_since = None
        if now > deadline:
            raise RuntimeFailure(f"the command did not listen on port {port} within {deadline_s:g} s",
                                 hint="raise --ready-timeout, or pass --port if the app always uses one port")
        time.sleep(interval)


class ChildExited(RuntimeFailure):
    """The child exited before it listened."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the command exited with status {code} before it listened on a port")
        self.code = code
