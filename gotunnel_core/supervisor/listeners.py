"""Listening sockets the daemon binds once and hands to an engine's process (`fd/N`).

An engine that rebinds its ports on every reload (Caddy binds a new SO_REUSEPORT socket per
config load and closes the old one) resets the connections queued on the old socket. When the
daemon owns the sockets instead, no config load ever closes one, and a port already in use
fails `start` at once with a message that names it.

Each port gets two sockets ("sides") in one SO_REUSEPORT group, and a classic BPF program on
the group (`steer`) sends every new connection to one side. A reload can then move new
connections to the idle side, give the old config a moment to read the requests on the
connections it already accepted, and only then start the new config on that side: a Go server
(Caddy) closes, unanswered, any request it reads after its shutdown began, so the old config
must not be handed fresh connections in its last moments. Where the kernel cannot steer (not
Linux), there is one socket per port and `steerable` is False.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys

from ..errors import RuntimeFailure
from ..models import Listen

#: Linux <asm-generic/socket.h>: attach a classic BPF program that picks the group member.
SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


class ListenerSockets:
    """The HTTP and HTTPS listening sockets for one `Listen` (two sides each where steerable)."""

    def __init__(self, listen: Listen, backlog: int = socket.SOMAXCONN, steer: bool | None = None) -> None:
        self.listen = listen
        self.steerable = sys.platform.startswith("linux") if steer is None else steer
        self._sides: dict[int, list[socket.socket]] = {}
        self.side = 0
        try:
            for port in (listen.http_port, listen.https_port):
                self._sides[port] = bind_group(listen.bind, port, backlog, 2 if self.steerable else 1)
            if self.steerable:
                self.steer(0)
        except BaseException:
            self.close()
            raise

    @classmethod
    def adopt(cls, listen: Listen, sides: dict[int, list[socket.socket]]) -> "ListenerSockets":
        """Sockets bound elsewhere (the root-bound ports of `gotunnel ports`): port -> its sockets,
        two per port forming a steerable SO_REUSEPORT group where the binder made them so."""
        self = cls.__new__(cls)
        self.listen = listen
        self._sides = {port: list(socks) for port, socks in sides.items()}
        self.steerable = sys.platform.startswith("linux") and all(len(s) == 2 for s in sides.values())
        self.side = 0
        if self.steerable:
            self.steer(0)  # a previous daemon may have left new connections steered to side 1
        return self

    def dup(self) -> "ListenerSockets":
        """The same listening sockets under new descriptors, for an engine to own and close."""
        return ListenerSockets.adopt(self.listen, {port: [sock.dup() for sock in socks]
                                                   for port, socks in self._sides.items()})

    def socket_of(self, port: int, side: int = 0) -> socket.socket:
        """The socket object of `port` on `side` (for servers in this process)."""
        return self._sides[port][side]

    def close_idle_sides(self) -> None:
        """Close every socket but the serving side's (a server that never switches sides)."""
        for socks in self._sides.values():
            for index, sock in enumerate(socks):
                if index != self.side:
                    sock.close()

    def port_fds(self, side: int | None = None) -> dict[int, int]:
        """port -> file descriptor of `side` (default: the side new connections go to)."""
        index = self.side if side is None else side
        return {port: socks[index].fileno() for port, socks in self._sides.items()}

    def fds(self) -> tuple[int, ...]:
        """Every socket, for the engine process to inherit (same numbers in the child)."""
        return tuple(sock.fileno() for socks in self._sides.values() for sock in socks)

    def other_side(self) -> int:
        return 1 - self.side if self.steerable else self.side

    def steer(self, side: int) -> None:
        """Send every new connection on both ports to `side` (queued ones stay where they are)."""
        if not self.steerable:
            return
        program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, side))
        fprog = _SockFprog(1, ctypes.cast(program, ctypes.POINTER(_SockFilter)))
        for socks in self._sides.values():
            # Group members are numbered in the order they started listening: side 0, side 1.
            socks[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
        self.side = side

    def close(self) -> None:
        for socks in self._sides.values():
            for sock in socks:
                sock.close()
        self._sides.clear()


def _address(host: str, port: int) -> tuple[int, int, int, tuple]:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)[0]
    except socket.gaierror as exc:
        raise RuntimeFailure(f"cannot listen on {host!r}: {exc.strerror}") from None
    return family, kind, proto, address


def bind_group(host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port; with more than one, one SO_REUSEPORT group of
    exactly these (Linux then hashes each new connection to one member, unless a program steers).

    Fails with a `RuntimeFailure` naming host:port when anything already listens there."""
    family, kind, proto, address = _address(host, port)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    socks: list[socket.socket] = []
    try:
        # A probe without SO_REUSEPORT fails if anything (even a SO_REUSEPORT server of this
        # user, which could otherwise join the group) already listens: nobody shares the port.
        probe = _socket(family, kind, proto, host, reuseport=False)
        try:
            probe.bind(address)
        finally:
            probe.close()
        for _ in range(count):
            sock = _socket(family, kind, proto, host, reuseport=count > 1)
            socks.append(sock)
            sock.bind(address)
            sock.listen(backlog)
    except OSError as exc:
        for sock in socks:
            sock.close()
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise RuntimeFailure(f"cannot listen on {where}: {reason}",
                             hint="choose other ports (--http-port/--https-port) or stop what uses them") from None
    return socks


def _socket(family: int, kind: int, proto: int, host: str, *, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding past TIME_WAIT
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
    except OSError:
        sock.close()
        raise
    return sock


__all__ = ["ListenerSockets", "bind_group"]
