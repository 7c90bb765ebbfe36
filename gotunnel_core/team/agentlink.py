"""The edge-to-agent hop: a TLS listener that terminates with the agent's member certificate and
forwards the bytes, untouched (Host and all), to this machine's engine on its HTTP port.

Edges check that certificate against the team CA for exactly `<user>.agent.member.<domain>`,
so a LAN peer that takes over the agent's address cannot answer in its place, and nobody on the
LAN reads the team's traffic. Forwarding bytes, not requests, works with every engine and keeps
this small; the listener speaks whatever the engine speaks on its HTTP port (HTTP/1.1, which is
the only protocol it offers in ALPN).

The engine is dialled at the address the edge reached (this machine's LAN address), not at
loopback: the engine then sees a LAN peer exactly as when edges connected to it directly, and
keeps its loopback-only pages (404 listings, 502 explainer) to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("gotunnel.agent")

#: The default port of the agent's TLS listener (`gotunnel agent --tls-port`).
DEFAULT_PORT = 7444
#: Seconds a peer has to finish the TLS handshake, and the agent to reach its engine.
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
CHUNK = 64 * 1024


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ serving the member certificate; HTTP/1.1 is the only protocol offered."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert, key)
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side (close it, for TLS, which
    cannot half-close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, OSError, ssl.SSLError):
        writer.close()


@dataclass
class AgentLink:
    """One TLS listener on `bind:port`, forwarding to the engine's HTTP port (`target`, set by
    the agent from what the daemon reports; connections are closed while it is unknown)."""

    cert: Path
    key: Path
    port: int = DEFAULT_PORT
    bind: str = "0.0.0.0"
    target: int | None = None
    _context: ssl.SSLContext | None = field(default=None, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)

    async def start(self) -> None:
        self._context = server_context(self.cert, self.key)
        self._server = await asyncio.start_server(self._handle, self.bind, self.port, ssl=self._context,
                                                  ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("agent.tls_listening", bind=self.bind, port=self.port)

    def reload(self) -> None:
        """Serve the renewed certificate from the next handshake on (open connections keep theirs)."""
        if self._context is not None:
            self._context.load_cert_chain(self.cert, self.key)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            target = self.target
            if target is None:
                return
            local = writer.get_extra_info("sockname")[0]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(local, target), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("agent.engine_unreachable", address=local, port=target, error=type(exc).__name__)
                return
            upstream = up_writer
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
