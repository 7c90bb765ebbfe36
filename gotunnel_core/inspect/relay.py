"""The recording hop: a loopback listener per backend of an inspected tunnel.

The engine's route for an inspected tunnel points at these relays instead of the backends; each
relay forwards the bytes unchanged to its backend (TLS for an `https` backend, as the builtin
engine does: unverified, it is the user's own server) and records the exchange on the way. This
works the same behind every engine, and a tunnel that is not inspected does not pass here at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import replace
from typing import Callable, Iterable

from ..logs import get_logger
from ..models import Backend, Tunnel
from .observe import RequestObserver, ResponseObserver, SkipRule
from .native import health_skip_rule
from .records import RecordStore

log = get_logger("gotunnel.inspect")

CONNECT_TIMEOUT = 10.0
CHUNK = 65536


def backend_ssl_context() -> ssl.SSLContext:
    """TLS towards an `https` backend: the developer's own (often self-signed) server, not verified."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_backend(backend: Backend) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = backend_ssl_context() if backend.scheme == "https" else None
    return await asyncio.wait_for(
        asyncio.open_connection(backend.host, backend.port, ssl=tls, server_hostname=backend.host if tls else None),
        CONNECT_TIMEOUT)


class Relay:
    """Forwards connections from the engine to one backend and records what passes."""

    def __init__(self, store: RecordStore, tunnel: Tunnel, backend: Backend) -> None:
        self.store = store
        self.tunnel = tunnel
        self.backend = backend
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def skip_rule(self) -> SkipRule | None:
        """The engine's active health checks (GET of the health path) are not recorded."""
        return health_skip_rule(self.tunnel)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        requests = RequestObserver(self.store, self.tunnel.name, self.backend.url, self.skip_rule())
        responses = ResponseObserver(self.store, requests)
        try:
            try:
                backend_reader, backend_writer = await open_backend(self.backend)
            except (OSError, asyncio.TimeoutError) as exc:
                await self._refuse(client_reader, client_writer, requests, responses, exc)
                return
            upstream = asyncio.create_task(_pump(client_reader, backend_writer, requests.feed, half_close=True))
            try:
                await _pump(backend_reader, client_writer, responses.feed, half_close=False)
            finally:
                upstream.cancel()
                await asyncio.gather(upstream, return_exceptions=True)
                backend_writer.close()
                responses.close()
        finally:
            client_writer.close()
            self._connections.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: RequestObserver,
                      responses: ResponseObserver, exc: BaseException) -> None:
        """The backend is down: answer 502 (recorded too), as the engine would."""
        with contextlib.suppress(OSError, asyncio.TimeoutError, ConnectionError):
            data = await asyncio.wait_for(reader.read(CHUNK), CONNECT_TIMEOUT)
            requests.feed(data)
        why = f"backend {self.backend.url} unreachable: {exc or type(exc).__name__}"
        body = f"gotunnel inspector: {why}\n".encode()
        head = (f"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError, ConnectionError):
            writer.write(head + body)
            await writer.drain()
        responses.feed(head + body)
        responses.close(why)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, feed: Callable[[bytes], None], *,
                half_close: bool) -> None:
    """Copy bytes until EOF, showing each chunk to `feed` first (an observer's, which never raises)."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            feed(data)
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError, asyncio.IncompleteReadError):
        pass


class RelaySet:
    """The relays of every inspected tunnel, kept in step with the tunnels the daemon serves."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._relays: dict[tuple[str, Backend], Relay] = {}

    @staticmethod
    def _wanted(tunnels: Iterable[Tunnel]) -> dict[tuple[str, Backend], Tunnel]:
        return {(t.name, b): t for t in tunnels if t.inspect for b in t.backends}

    async def sync(self, tunnels: Iterable[Tunnel]) -> None:
        """Start a relay for each backend of an inspected tunnel (before the engine is pointed at it)."""
        for key, tunnel in self._wanted(tunnels).items():
            relay = self._relays.get(key)
            if relay is None:
                relay = Relay(self.store, tunnel, key[1])
                await relay.start()
                self._relays[key] = relay
                log.info("inspecting", tunnel=tunnel.name, backend=key[1].url, relay_port=relay.port)
            relay.tunnel = tunnel

    async def prune(self, tunnels: Iterable[Tunnel]) -> None:
        """Close the relays `tunnels` do not use (once the engine no longer routes to them)."""
        wanted = self._wanted(tunnels)
        for key in [k for k in self._relays if k not in wanted]:
            await self._relays.pop(key).close()

    def engine_view(self, tunnel: Tunnel) -> Tunnel:
        """The tunnel as the engine serves it: an inspected one's backends are its relays."""
        if not tunnel.inspect:
            return tunnel
        backends = []
        for backend in tunnel.backends:
            relay = self._relays[(tunnel.name, backend)]
            scheme = "h2c" if backend.scheme == "h2c" else "http"
            backends.append(Backend(scheme, "127.0.0.1", relay.port, backend.path, backend.weight))
        host_header = tunnel.host_header
        if host_header == "backend":  # the relay passes bytes: the engine sends the real backend's name
            host_header = tunnel.backends[0].address
        return replace(tunnel, backends=tuple(backends), host_header=host_header)

    def backend_of(self, tunnel: str, url: str) -> Backend | None:
        for (name, backend) in self._relays:
            if name == tunnel and backend.url == url:
                return backend
        return None

    async def close(self) -> None:
        for relay in self._relays.values():
            await relay.close()
        self._relays.clear()
