"""Listening sockets the daemon binds once and hands to an engine's process (`fd/N`).

An engine that rebinds its ports on every reload (Caddy binds a new SO_REUSEPORT socket per
config load and closes the old one) resets the connections queued on the old socket. When the
daemon owns the socket instead, every engine process and every config generation accepts from
the same queue, so nothing queued is lost, and a port already in use fails `start` at once
with a message that names it.
"""

from __future__ import annotations

import errno
import socket

from ..errors import RuntimeFailure
from ..models import Listen


class ListenerSockets:
    """The HTTP and HTTPS listening sockets for one `Listen`, open until `close`."""

    def __init__(self, listen: Listen, backlog: int = socket.SOMAXCONN) -> None:
        self.listen = listen
        self._sockets: dict[int, socket.socket] = {}
        try:
            for port in (listen.http_port, listen.https_port):
                self._sockets[port] = _bind(listen.bind, port, backlog)
        except BaseException:
            self.close()
            raise

    def fd_for(self, port: int) -> int:
        """The file descriptor listening on `port` (the same number in the engine's process)."""
        return self._sockets[port].fileno()

    def port_fds(self) -> dict[int, int]:
        """port -> file descriptor, for rendering `fd/N` listen addresses."""
        return {port: sock.fileno() for port, sock in self._sockets.items()}

    def fds(self) -> tuple[int, ...]:
        return tuple(sock.fileno() for sock in self._sockets.values())

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)[0]
    except socket.gaierror as exc:
        raise RuntimeFailure(f"cannot listen on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only (rebinding past TIME_WAIT); no SO_REUSEPORT, so a second server on the
        # port is refused here instead of silently sharing it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise RuntimeFailure(f"cannot listen on {where}: {reason}",
                             hint="choose other ports (--http-port/--https-port) or stop what uses them") from None
    return sock


__all__ = ["ListenerSockets"]
