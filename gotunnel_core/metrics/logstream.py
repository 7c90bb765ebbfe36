"""Per-request counters for engines without per-host statistics: an access-log stream to the daemon.

nginx (syslog over a unix datagram socket) and Caddy (its `net` log writer, `unixgram//`) send
one datagram per finished request to a socket the daemon binds in the engine's `run/` directory
(mode 0600: only the daemon's user can write to it). Each datagram is parsed by the engine's own
`parse` function into an `AccessRecord`; the record's host is matched to a tunnel name and counted
into `TunnelStats`. Datagrams keep the engine non-blocking: when the daemon falls behind under
extreme load the kernel drops records (the counters then undercount), and the engine never stalls.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

from ..models import NAME_SUFFIXES
from .stats import TunnelStats

#: Kernel receive buffer asked for the socket (capped by net.core.rmem_max unless root).
RECEIVE_BUFFER = 8 * 1024 * 1024
MAX_DATAGRAM = 256 * 1024  # Caddy's JSON record carries the request headers


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One finished request as an engine's access log describes it."""

    host: str  # the tunnel name itself, or a Host header to match against the tunnels
    status: int
    seconds: float
    bytes_in: int
    bytes_out: int
    upstream_errors: int = 0


class AccessRecordParser(Protocol):
    """An engine's parser of one datagram of its access log (None: not a request of a tunnel)."""

    def __call__(self, datagram: bytes, /) -> AccessRecord | None: ...


class TunnelMatcher:
    """Host header (or a bare tunnel name) -> tunnel name, exact names before one-label wildcards."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self._cache: dict[str, str | None] = {}

    def match(self, host: str) -> str | None:
        try:
            return self._cache[host]
        except KeyError:
            pass
        found = self._lookup(host)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[host] = found
        return found

    def _lookup(self, host: str) -> str | None:
        name = host.lower()
        if name in self.names:
            return name
        if name.startswith("["):
            return None
        head, sep, port = name.rpartition(":")
        if sep and port.isdigit():
            name = head
        name = name.rstrip(".")
        for suffix in NAME_SUFFIXES:
            if name.endswith("." + suffix):
                name = name[: -len(suffix) - 1]
                break
        else:
            return None
        if name in self.names:
            return name
        _, dot, rest = name.partition(".")
        if dot and "*." + rest in self.names:
            return "*." + rest
        return None


class AccessLogStream:
    """Binds `path` as a unix datagram socket and counts every record the engine sends to it."""

    def __init__(self, path: Path, parse: AccessRecordParser) -> None:
        self.path = path
        self.parse = parse
        self.matcher = TunnelMatcher(())
        self.tunnels: dict[str, TunnelStats] = {}
        self.dropped = 0  # records that parsed to nothing or named no tunnel
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Bind the socket (replacing a stale one) and start reading it on the running loop."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self.drain)

    def set_tunnels(self, names: Iterable[str]) -> None:
        """The tunnels served now: counters of removed tunnels are dropped, new ones start at 0."""
        names = set(names)
        self.matcher = TunnelMatcher(names)
        self.tunnels = {name: self.tunnels.get(name) or TunnelStats(active=None) for name in names}

    def drain(self) -> None:
        """Count every datagram waiting in the socket (called when readable, and before a scrape)."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(4096):  # bounded: let the loop breathe under a flood
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Count one datagram."""
        try:
            record = self.parse(data)
        except (ValueError, KeyError, TypeError, IndexError):
            record = None
        name = self.matcher.match(record.host) if record is not None else None
        stats = self.tunnels.get(name) if name is not None else None
        if stats is None or record is None:
            self.dropped += 1
            return
        stats.observe(record.status, record.seconds, record.bytes_in, record.bytes_out)
        stats.upstream_errors += record.upstream_errors

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
