"""The port broker: runs as the user, holds the listening sockets root bound for ports 80 and 443,
and hands them to that user's processes only.

`python -m gotunnel_core.ports.broker` finds its sockets in what started it: `sudo gotunnel ports
enable` (descriptors named in GOTUNNEL_PORT_FDS), a systemd socket unit (LISTEN_FDS) or a launchd
job's `Sockets` (launch_activate_socket). It never runs as root (it refuses to) and never binds
anything itself. It listens on a unix socket in a 0700 directory of the user's, mode 0600, and
answers a connection only when the peer's uid (SO_PEERCRED / LOCAL_PEERCRED) is its own: the
directory's mode keeps other users out, the peer check keeps them out should the mode be changed.

Protocol, one request line per connection: `ping` -> {"ok", "pid", "bind", "ports"}; `sockets` ->
the same JSON with every listening socket attached (SCM_RIGHTS), in the order of "ports".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from typing import Any

#: Longest request line; anything else is a wrong client.
MAX_REQUEST = 64


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket (None if the OS cannot say)."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    if sys.platform == "darwin":
        sol_local, local_peercred = 0, 1  # <sys/un.h>; struct xucred { u_int version; uid_t uid; ... }
        creds = conn.getsockopt(sol_local, local_peercred, 76)
        return int(struct.unpack("Ii", creds[:8])[1])
    return None


def inherited_sockets(env: dict[str, str]) -> list[socket.socket]:
    """The listening sockets this process was started with, from whichever starter it was."""
    fds: list[int] = []
    if env.get("GOTUNNEL_PORT_FDS"):
        fds = [int(item) for item in env["GOTUNNEL_PORT_FDS"].split(",")]
    elif env.get("LISTEN_FDS") and env.get("LISTEN_PID") == str(os.getpid()):
        fds = list(range(3, 3 + int(env["LISTEN_FDS"])))
    elif sys.platform == "darwin":
        fds = _launchd_fds("http") + _launchd_fds("https")
    socks = [socket.socket(fileno=fd) for fd in fds]
    for sock in socks:
        sock.set_inheritable(False)
        if sock.type != socket.SOCK_STREAM:
            raise SystemExit(f"gotunnel port broker: descriptor {sock.fileno()} is not a stream socket")
    return socks


def _launchd_fds(name: str) -> list[int]:
    """launch_activate_socket(3): the descriptors launchd bound for the job's socket `name`."""
    import ctypes

    libc = ctypes.CDLL(None)
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    if libc.launch_activate_socket(name.encode(), ctypes.byref(fds), ctypes.byref(count)) != 0:
        return []
    out = [fds[i] for i in range(count.value)]
    libc.free(fds)
    return out


class Broker:
    """Answers `ping` and `sockets` on its unix socket for its own user."""

    def __init__(self, socks: list[socket.socket], path: str) -> None:
        self.socks = socks
        self.path = path
        names = [sock.getsockname() for sock in socks]
        self.bind = str(names[0][0]) if names else ""
        self.ports = [int(name[1]) for name in names]
        self.server: socket.socket | None = None

    def describe(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "uid": os.getuid(), "bind": self.bind, "ports": self.ports}

    def listen(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.listen(16)
        self.server = server

    def serve_one(self) -> None:
        assert self.server is not None
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                self._answer(conn)
            except OSError:
                pass

    def _answer(self, conn: socket.socket) -> None:
        request = conn.recv(MAX_REQUEST).strip()
        uid = peer_uid(conn)
        if uid != os.getuid():
            conn.sendall(json.dumps({"ok": False, "error": f"uid {uid} may not take these ports"}).encode() + b"\n")
            print(f"gotunnel port broker: refused a connection from uid {uid}", file=sys.stderr, flush=True)
            return
        payload = json.dumps(self.describe()).encode() + b"\n"
        if request == b"sockets":
            socket.send_fds(conn, [payload], [sock.fileno() for sock in self.socks])
        elif request == b"ping":
            conn.sendall(payload)
        else:
            conn.sendall(json.dumps({"ok": False, "error": "unknown request"}).encode() + b"\n")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def main() -> None:
    from .layout import broker_socket

    if os.geteuid() == 0:
        raise SystemExit("gotunnel port broker: refusing to run as root (it runs as the user it serves)")
    socks = inherited_sockets(dict(os.environ))
    if not socks:
        raise SystemExit("gotunnel port broker: started without listening sockets")
    broker = Broker(socks, str(broker_socket(os.getuid())))
    broker.listen()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print(f"gotunnel port broker: serving {broker.bind} ports {sorted(set(broker.ports))} to uid {os.getuid()}",
          file=sys.stderr, flush=True)
    try:
        while True:
            broker.serve_one()
    finally:
        broker.close()


if __name__ == "__main__":
    main()
