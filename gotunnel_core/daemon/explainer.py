"""The daemon's explainer: the backend of provided tunnels that nothing can reach.

It listens on loopback only and answers every request with a 502 page saying, for the tunnel
the Host header names, why its container cannot be reached and what to change. Every engine
(builtin, or nginx/Caddy/Envoy in a process or a host-network container) reaches loopback and
passes a backend's 502 through unchanged, so the explanation needs nothing engine-specific.

The details (container names, networks, subnets) are for the developer on this machine: a
client whose address, as the engine appends it to X-Forwarded-For, is not loopback (a LAN peer
asking for `NAME.local`) gets the 502 without them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Callable

from ..models import NAME_SUFFIXES
from ..pages import unreachable_page

#: The most of a request head read before answering (the page depends only on the Host).
MAX_HEAD = 16384
#: (problem, fix) for a tunnel name, or None when the tunnel is no longer unreachable.
Lookup = Callable[[str], "tuple[str, str] | None"]


def tunnel_of_host(host: str) -> str:
    """`web.localhost:8080` -> `web` (the tunnel name a Host header names)."""
    name = host.strip().lower().rsplit(":", 1)[0] if not host.strip().startswith("[") else host
    for suffix in NAME_SUFFIXES:
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1]
    return name


def _from_loopback(forwarded_for: str) -> bool:
    """Whether the engine's client (the last X-Forwarded-For entry, the one the engine added) is local."""
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    try:
        return ipaddress.ip_address(last.split("%")[0]).is_loopback
    except ValueError:
        return False


class Explainer:
    """An asyncio HTTP/1.1 server on 127.0.0.1 that answers 502 with the reason."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        headers: dict[str, str] = {}
        for line in head[:MAX_HEAD].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers.setdefault(key.strip().lower(), value.strip())
        name = tunnel_of_host(headers.get("host") or headers.get("x-forwarded-host") or "")
        found = self.lookup(name) if _from_loopback(headers.get("x-forwarded-for", "")) else None
        problem, fix = found if found else ("its container cannot be reached from this machine",
                                            "`gotunnel status` on that machine says why")
        body = unreachable_page(name, problem, fix).encode()
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html; charset=utf-8\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
