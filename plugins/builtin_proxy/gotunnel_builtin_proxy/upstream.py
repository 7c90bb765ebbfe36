"""Upstream side: one Protocol per backend connection relaying the response, and per-backend pools.

The response relay lives here (it owns the response parser): heads are rebuilt from parsed
headers, bodies re-framed for the client, and a connection is returned to its pool only when
the exchange ended cleanly (complete response, keep-alive, request fully sent, no upgrade).
"""

from __future__ import annotations

import asyncio
import ssl
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .request import Req
from .responses import (
    CHUNK_END,
    CHUNKED,
    CONN_CLOSE,
    CONN_KEEP_ALIVE,
    CRLF,
    PLAIN_CONNECTION_TOKENS,
    RESP_KINDS,
    STATUS_LINES,
    VIA,
    status_line,
)

if TYPE_CHECKING:
    from .protocol import ClientProtocol

#: Transport write-buffer high-water mark: beyond it the other side stops being read.
WRITE_HIGH = 256 * 1024
CONNECT_TIMEOUT = 10.0


class UpstreamProtocol:
    """One connection to a backend; attached to at most one client exchange at a time.

    An asyncio.Protocol by its methods (not by inheritance: see protocol.py on the compiled build).
    """

    __slots__ = (
        "pool", "transport", "parser", "client", "ct", "req", "headers", "idle", "closed", "t_idle",
        "activity", "out_chunked", "finished", "head_sent", "got_bytes", "interim", "broken",
        "until_close", "reset_parser", "upgrade_ok", "upgraded", "client_ka", "reused",
        "paused_by_client", "via", "keep", "out",
    )

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpResponseParser(self)
        self.client: ClientProtocol | None = None
        self.ct: asyncio.Transport | None = None
        self.req: Req | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle = False
        self.closed = False
        self.t_idle = 0.0
        self.activity = False
        self.reused = False
        self.upgraded = False
        self.paused_by_client = False
        self.via = pool.via
        self.out: list[bytes] = []  # bytes for the client, written once per data_received
        self._reset()

    def _reset(self) -> None:
        self.out_chunked = False
        self.finished = False
        self.head_sent = False
        self.got_bytes = False
        self.interim = False
        self.broken = False
        self.until_close = False
        self.reset_parser = False
        self.upgrade_ok = False
        self.client_ka = False
        self.keep = False

    # -- wiring -------------------------------------------------------------------------
    def attach(self, client: "ClientProtocol", req: "Req") -> None:
        """Bind this connection to one request/response exchange of `client`."""
        self.client = client
        self.ct = client.transport
        self.req = req
        self.idle = False
        if self.headers:
            self.headers = []
        self._reset()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._lost(exc)
        finally:
            # The parser refers back to this protocol: dropping it leaves no cycle for the collector.
            self.parser = None  # type: ignore[assignment]

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.pool.discard(self)
            return
        client = self.client
        if client is None:
            return
        if self.upgraded:
            client.relay_closed()
            return
        if self.until_close and self.head_sent and not self.finished:
            # Close-delimited response: EOF is its end.
            if self.out_chunked:
                self.ct.write(CHUNK_END)  # type: ignore[union-attr]
            self.finished = True
            self._complete()
            return
        self.client = None
        client.upstream_lost(self, exc)

    def eof_received(self) -> bool:
        """The backend half-closed: let the transport close (a close-delimited body ends there)."""
        return False

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_for_upstream()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_for_upstream()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self.activity = True
        if self.upgraded:
            self.ct.write(data)  # type: ignore[union-attr]
            if self.client is not None:
                self.client.nout += len(data)
            return
        client = self.client
        if client is None:
            # Bytes on an idle pooled connection: the stream is out of step; drop it.
            self.transport.close()
            return
        self.got_bytes = True
        client.nout += len(data)
        out = self.out
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._flush()
            if self.upgrade_ok and self.client is not None:
                self.upgraded = True
                client.start_relay(self, data[exc.args[0]:])
                return
            self._fail("backend switched protocols unexpectedly")
            return
        except HttpParserError as exc:
            self._flush()
            self._fail(f"invalid response from backend ({exc})")
            return
        if out:
            # One write (one syscall) per read from the backend: head, body and end together.
            if len(out) == 1:
                self.ct.write(out[0])  # type: ignore[union-attr]
            else:
                self.ct.writelines(out)  # type: ignore[union-attr]
            out.clear()
        if self.finished:
            self._complete()

    def _flush(self) -> None:
        if self.out:
            if self.ct is not None:
                self.ct.writelines(self.out)
            self.out.clear()

    def _fail(self, reason: str) -> None:
        """A broken response: never reuse the connection; let the client side report it."""
        self.broken = True
        client = self.client
        self.client = None
        self.transport.close()
        if client is not None:
            client.upstream_failed(self, reason)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.finished or self.client is None:
            self.broken = True
            return
        status = self.parser.get_status_code()
        req = self.req
        assert req is not None
        if status < 200:
            if status == 101:
                if not req.upgrade:
                    self.broken = True
                    return
                req.status = 101
                self.upgrade_ok = True
                self._write_head(status, req, upgrade=True)
                return
            self.interim = True
            if req.http11:
                self._write_head(status, req, interim=True)
            self.headers = []
            return
        req.status = status
        self._write_head(status, req)
        if req.is_head:
            # llhttp would wait for a body announced by Content-Length: end it here, and give
            # the connection a fresh parser so the next response starts in step.
            self.keep = self.parser.should_keep_alive()
            self.finished = True
            self.reset_parser = True

    def _write_head(self, status: int, req: "Req", interim: bool = False, upgrade: bool = False) -> None:
        route = req.route
        drop = route.resp_drop if route is not None else None
        lines = STATUS_LINES
        line = lines.get(status)
        out = [line if line is not None else status_line(status)]
        cl = te = conn = upg = None
        known = RESP_KINDS.known
        lengths = RESP_KINDS.lengths
        for name, value in self.headers:
            size = len(name)
            # inline KindCache.ordinary_by_length: most names skip the dict probe
            kind = known.get(name, -1) if size < 64 and (lengths >> size) & 1 else None
            if kind == -1:
                kind = RESP_KINDS.miss(name)
            if kind is not None:
                if kind == 6:
                    cl = value
                elif kind == 3:
                    te = value
                elif kind == 2:
                    conn = value
                elif kind == 5:
                    upg = value
                continue
            if drop and name.lower() in drop:
                continue
            out.append(name)
            out.append(b": ")
            out.append(value)
            out.append(CRLF)
        if conn is not None and conn != b"keep-alive" and conn != b"close" \
                and conn.lower() not in PLAIN_CONNECTION_TOKENS:
            named = {t.strip().lower() for t in conn.split(b",")} - PLAIN_CONNECTION_TOKENS
            if named:
                out = [out[0]] + [
                    part for i in range(1, len(out), 4) if out[i].lower() not in named for part in out[i:i + 4]
                ]
        if interim:
            out.append(CRLF)
            self.out.append(b"".join(out))
            return
        if upgrade:
            out.append(b"Connection: upgrade\r\nUpgrade: ")
            out.append(upg or b"")
            out.append(CRLF)
            if route is not None and route.resp_add:
                out.append(route.resp_add)
            if self.via:
                out.append(VIA)
            out.append(CRLF)
            self.out.append(b"".join(out))
            self.head_sent = True
            return
        ka = req.keep_alive and not req.upgrade
        if cl is not None:
            out.append(b"Content-Length: ")
            out.append(cl)
            out.append(CRLF)
        elif not (req.is_head or status == 204 or status == 304):
            if te is None:
                self.until_close = True
            if req.http11:
                out.append(CHUNKED)
                self.out_chunked = True
            else:
                ka = False
        if not ka:
            out.append(CONN_CLOSE)
        elif not req.http11:
            out.append(CONN_KEEP_ALIVE)
        if route is not None:
            add = route.resp_add
            if add:
                out.append(add)
        if self.via:
            out.append(VIA)
        out.append(CRLF)
        self.client_ka = ka
        self.head_sent = True
        self.out.append(b"".join(out))

    def on_body(self, body: bytes) -> None:
        if self.finished:
            self.broken = True
            return
        if self.out_chunked:
            self.out += (b"%x\r\n" % len(body), body, CRLF)
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.finished:
            return
        # llhttp forgets keep-alive once the message is complete: read it now.
        self.keep = self.parser.should_keep_alive()
        if self.out_chunked:
            self.out.append(CHUNK_END)
        self.finished = True

    # -- end of an exchange ------------------------------------------------------------------
    def _complete(self) -> None:
        """The response was fully relayed: pool or close this connection, tell the client."""
        req = self.req
        client = self.client
        reusable = (
            not self.broken
            and not self.until_close
            and not self.closed
            and req is not None
            and req.complete
            and not req.upgrade
            and self.keep
        )
        if self.reset_parser:
            self.parser = HttpResponseParser(self)
        self.client = None
        self.ct = None
        self.req = None
        if self.paused_by_client:
            self.paused_by_client = False
            if not self.closed:
                self.transport.resume_reading()
        if reusable:
            self.pool.release(self)
        elif not self.closed:
            self.transport.close()
        if client is not None:
            client.response_done(self, self.client_ka)


def _backend_ssl_context() -> ssl.SSLContext:
    """TLS to https:// backends: local dev servers mostly use self-signed certificates, so no verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class PooledConnection(Protocol):
    """What `Pool` needs of a connection it keeps idle (`UpstreamProtocol`, HTTP/2's `H1Relay`)."""

    closed: bool
    idle: bool
    reused: bool
    t_idle: float
    transport: Any


class Pool:
    """Idle keep-alive connections to one backend address (shared by every tunnel using it)."""

    __slots__ = ("loop", "scheme", "host", "port", "idle", "max_idle", "idle_timeout", "via", "closed", "_ssl")

    def __init__(self, loop: asyncio.AbstractEventLoop, scheme: str, host: str, port: int,
                 max_idle: int = 512, idle_timeout: float = 30.0, via: bool = False) -> None:
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.idle: list[Any] = []  # PooledConnection: UpstreamProtocol here, H1Relay in h2_upstream.H1Pool
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.via = via
        self.closed = False  # set when the backend left the table: returning connections are closed
        self._ssl = _backend_ssl_context() if scheme == "https" else None

    def get(self) -> UpstreamProtocol | None:
        """Most recently used idle connection (LIFO keeps few sockets warm), or None."""
        idle = self.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                up.idle = False
                return up
        return None

    async def connect(self) -> UpstreamProtocol:
        """Open a fresh connection (raises OSError / TimeoutError when the backend is down)."""
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs = {"ssl": self._ssl, "server_hostname": self.host}
        _, proto = await asyncio.wait_for(
            self.loop.create_connection(lambda: UpstreamProtocol(self), self.host, self.port,  # type: ignore[type-var]
                                        **kwargs),
            CONNECT_TIMEOUT,
        )
        return proto

    def release(self, up: PooledConnection) -> None:
        if self.closed or len(self.idle) >= self.max_idle:
            up.transport.close()
            return
        up.idle = True
        up.reused = True
        up.t_idle = monotonic()
        self.idle.append(up)

    def discard(self, up: PooledConnection) -> None:
        try:
            self.idle.remove(up)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        """Close idle connections unused for longer than the idle timeout."""
        if not self.idle:
            return
        keep = []
        for up in self.idle:
            if now - up.t_idle > self.idle_timeout:
                up.idle = False
                up.transport.close()
            else:
                keep.append(up)
        self.idle = keep

    def close(self) -> None:
        self.closed = True
        for up in self.idle:
            up.idle = False
            up.transport.close()
        self.idle = []
