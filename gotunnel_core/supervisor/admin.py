"""HTTP to an engine's admin or control endpoint: a unix socket in its work directory (Caddy's
admin API, Envoy's admin endpoint, nginx's control socket), or loopback TCP where a socket path
would be too long.

The HTTP itself is the standard library's `http.client` (request framing, Content-Length and
chunked bodies, status parsing); this module only gives it a unix socket and runs each exchange
in a worker thread so the daemon's event loop never blocks. A library such as httpx (with a UDS
transport) would add five packages to every install for a handful of local admin calls.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any, Mapping


class AdminUnreachable(OSError):
    """The endpoint could not be reached, or did not answer in time, or answered garbage."""


@dataclass(frozen=True)
class AdminAnswer:
    """A complete answer: status and body."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)


class _UnixConnection(http.client.HTTPConnection):
    """`HTTPConnection` over a unix socket (the host name only fills the Host header)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class AdminClient:
    """Requests to one endpoint: `AdminClient(unix="/.../run/admin.sock")` or `AdminClient(tcp=("127.0.0.1", 9901))`.

    Every request uses a fresh connection (`Connection: close`), so a restarted engine is reached
    without stale state.
    """

    unix: str | None = None
    tcp: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if (self.unix is None) == (self.tcp is None):
            raise ValueError("an AdminClient needs exactly one of unix= and tcp=")

    @property
    def where(self) -> str:
        return f"unix:{self.unix}" if self.unix is not None else f"{self.tcp[0]}:{self.tcp[1]}"  # type: ignore[index]

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> AdminAnswer:
        """One request; the whole answer is read. Raises AdminUnreachable."""
        return await asyncio.to_thread(self._exchange, method, path, body, dict(headers or {}), timeout)

    async def get(self, path: str, timeout: float = 5.0) -> AdminAnswer | None:
        """GET `path`; None when the endpoint does not answer (a program still starting)."""
        try:
            return await self.request("GET", path, timeout=timeout)
        except AdminUnreachable:
            return None

    def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> AdminAnswer:
        conn: http.client.HTTPConnection
        if self.unix is not None:
            conn = _UnixConnection(self.unix, timeout)
        else:
            assert self.tcp is not None
            conn = http.client.HTTPConnection(self.tcp[0], self.tcp[1], timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Connection": "close", **headers})
            response = conn.getresponse()
            return AdminAnswer(response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise AdminUnreachable(f"{self.where} did not answer {method} {path}: {exc or type(exc).__name__}") from None
        finally:
            conn.close()


__all__ = ["AdminAnswer", "AdminClient", "AdminUnreachable"]
