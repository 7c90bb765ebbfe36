"""Backend side of HTTP/2 streams: HTTP/1.1 exchanges on pooled keep-alive connections, and
multiplexed HTTP/2 connections (the `h2` library, client side) for `h2c://` backends and
`https://` backends that negotiate h2 by ALPN.

Both relays offer one interface to `H2Stream`: `send_body`, `end_body`, `writable`,
`pause_reading`/`resume_reading` (response backpressure), `abort` and `take_activity`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from . import h2_frames as F
from .responses import CHUNK_END, CRLF, PLAIN_CONNECTION_TOKENS
from .upstream import CONNECT_TIMEOUT, WRITE_HIGH, Pool

if TYPE_CHECKING:
    from .balancer import BackendState
    from .h2_protocol import H2Stream

_NO_BODY_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"))
UPSTREAM_WINDOW = 1024 * 1024  # per-stream receive window towards HTTP/2 backends
UPSTREAM_CONN_WINDOW = 16 * 1024 * 1024


def start_exchange(stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]]) -> None:
    """Relay `stream` to `backend`: HTTP/2 when the backend speaks it, else pooled HTTP/1.1."""
    stream.backend = backend
    recorded = backend.recorded_h1
    if recorded is not None:  # a backend of an inspected tunnel: HTTP/1.1 on its recording pool
        relay = recorded.get()
        if relay is not None:
            relay.attach(stream, backend, fields)
        else:
            _spawn(stream, _h1_connect(stream, backend, fields, recorded))  # type: ignore[arg-type]
        return
    registry: Upstreams = stream.conn.st.h2
    b = backend.backend
    key = (b.scheme, b.host, b.port)
    if b.scheme == "h2c" or (b.scheme == "https" and not stream.websocket and registry.h2_ok.get(key) is not False):
        if stream.websocket:
            stream.conn.bad_gateway(stream, backend, "websockets need an HTTP/1.1 backend (h2c:// cannot upgrade)")
            return
        _spawn(stream, _h2_exchange(stream, backend, fields, registry.h2_pool(key)))
        return
    pool = registry.h1_pool(key)
    relay = pool.get()
    if relay is not None:
        relay.attach(stream, backend, fields)
    else:
        _spawn(stream, _h1_connect(stream, backend, fields, pool))


def _spawn(stream: "H2Stream", coro: Any) -> None:
    st = stream.conn.st
    task = st.loop.create_task(coro)
    st.tasks.add(task)
    task.add_done_callback(st.tasks.discard)


def _connect_failed(stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]],
                    exc: BaseException) -> None:
    """Passive ejection and failover, as on the HTTP/1.1 path."""
    reason = "connection timed out" if isinstance(exc, asyncio.TimeoutError) else (
        getattr(exc, "strerror", None) or str(exc))
    route = stream.route
    assert route is not None
    route.balancer.connect_failed(backend, reason)
    stream.conn.st.upstream_errors += 1
    route.stats.upstream_errors += 1
    if stream.ended:
        return
    if stream.tried is None:
        stream.tried = []
    stream.tried.append(backend)
    nxt = route.balancer.pick(stream.tried)
    if nxt is not None:
        start_exchange(stream, nxt, fields)
    else:
        stream.conn.bad_gateway(stream, backend, reason)


async def _h1_connect(stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]],
                      pool: "H1Pool") -> None:
    try:
        relay = await pool.connect()
    except (OSError, asyncio.TimeoutError) as exc:
        _connect_failed(stream, backend, fields, exc)
        return
    if stream.ended:
        pool.release(relay)
        return
    relay.attach(stream, backend, fields)


class H1Pool(Pool):
    """`Pool` of `H1Relay` connections (HTTP/1.1 towards the backend for HTTP/2 streams)."""

    __slots__ = ()

    def get(self) -> "H1Relay | None":  # type: ignore[override]
        return super().get()  # type: ignore[return-value]

    async def connect(self) -> "H1Relay":  # type: ignore[override]
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs = {"ssl": self._ssl, "server_hostname": self.host}
        _, proto = await asyncio.wait_for(
            self.loop.create_connection(lambda: H1Relay(self), self.host, self.port, **kwargs), CONNECT_TIMEOUT)
        return proto


class H1Relay(asyncio.Protocol):
    """One HTTP/1.1 backend connection carrying one HTTP/2 stream's exchange at a time."""

    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpResponseParser(self)
        self.stream: H2Stream | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle = False
        self.closed = False
        self.reused = False
        self.t_idle = 0.0
        self._reset()

    def _reset(self) -> None:
        self.backend: BackendState | None = None
        self.fields: list[tuple[bytes, bytes]] = []
        self.chunked = False
        self.req_done = False
        self.finished = False
        self.head_sent = False
        self.got_bytes = False
        self.interim = False
        self.until_close = False
        self.keep = False
        self.write_paused = False
        self.read_paused = False
        self.upgraded = False
        self.activity = False
        self.new_parser = False
        self.error = ""

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]]) -> None:
        """Send the request head (and any body that arrived meanwhile) for `stream`."""
        self.idle = False
        self._reset()
        self.stream = stream
        self.backend = backend
        self.fields = fields
        if self.headers:
            self.headers = []
        stream.relay = self
        req = stream.req
        assert req is not None
        if stream.paused:
            self.pause_reading()
        parts = [b"GET" if stream.websocket else req.method, b" "]
        if req.path != b"*":
            parts.append(backend.prefix)
        route = stream.route
        assert route is not None
        parts += (req.path, b" HTTP/1.1\r\nHost: ", route.upstream_authority(backend, req.authority), CRLF)
        for name, value in fields:
            if name != b"te":
                parts += (name, b": ", value, CRLF)
        if stream.websocket:
            key = base64.b64encode(os.urandom(16))
            parts += (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ", key, CRLF)
        elif req.content_length >= 0:
            parts.append(b"Content-Length: %d\r\n" % req.content_length)
        elif not stream.remote_closed or stream.buffered:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = True
        elif req.method not in _NO_BODY_METHODS:
            parts.append(b"Content-Length: 0\r\n")
        parts.append(CRLF)
        head = b"".join(parts)
        body = stream.buffered
        stream.buffered = None
        if body:
            out = [head]
            n = 0
            for chunk in body:
                n += len(chunk)
                if self.chunked:
                    out += (b"%x\r\n" % len(chunk), chunk, CRLF)
                else:
                    out.append(chunk)
            if stream.remote_closed and self.chunked:
                out.append(CHUNK_END)
            self.transport.writelines(out)
            stream.ack(n)
        elif self.chunked and stream.remote_closed:
            self.transport.writelines((head, CHUNK_END))
        else:
            self.transport.write(head)
        self.req_done = stream.remote_closed

    # -- request body (from the stream) ------------------------------------------------------------
    def send_body(self, data: bytes) -> None:
        if self.closed:
            return
        if self.chunked:
            self.transport.writelines((b"%x\r\n" % len(data), data, CRLF))
        else:
            self.transport.write(data)

    def end_body(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.req_done = True
        if self.closed:
            return
        if self.upgraded:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            return
        if self.chunked:
            self.transport.write(CHUNK_END)
        if self.finished:
            self._complete()

    def writable(self) -> bool:
        return not self.write_paused and not self.closed

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.stream is not None:
            self.stream.resume_body()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """The client side went away mid-exchange: this connection is out of step; close it."""
        self.stream = None
        if not self.closed:
            self.transport.close()

    def take_activity(self) -> bool:
        act, self.activity = self.activity, False
        return act

    # -- connection --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.pool.discard(self)
            return
        stream, self.stream = self.stream, None
        if stream is None or stream.ended:
            return
        stream.relay = None
        if self.upgraded or (self.until_close and self.head_sent and not self.finished):
            stream.finish()
            return
        if self.finished:
            return
        backend = self.backend
        req = stream.req
        if (not self.got_bytes and self.reused and backend is not None and req is not None
                and req.content_length <= 0 and not self.chunked and not stream.websocket):
            # A pooled connection the backend had closed: nothing was received, so retrying is safe.
            _spawn(stream, _h1_connect(stream, backend, self.fields, self.pool))  # type: ignore[arg-type]
            return
        stream.upstream_failed("the backend closed the connection" if exc is None else str(exc))

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self.activity = True
        stream = self.stream
        if self.upgraded:
            if stream is not None:
                stream.send_body(data)
            return
        if stream is None:
            self.transport.close()  # bytes on an idle or abandoned connection: out of step
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            if stream.websocket and self.upgraded:
                rest = data[exc.args[0]:]
                if rest:
                    stream.send_body(rest)
                return
            self._fail("backend switched protocols unexpectedly")
        except HttpParserError as exc:
            self._fail(self.error or f"invalid response from backend ({exc})")

    def _fail(self, reason: str) -> None:
        stream, self.stream = self.stream, None
        self.transport.close()
        if stream is not None:
            stream.upstream_failed(reason)

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        stream = self.stream
        if stream is None or self.finished:
            return
        status = self.parser.get_status_code()
        headers = self.headers
        self.headers = []
        if status < 200:
            if status == 101 and stream.websocket:
                self.upgraded = True
                self.head_sent = True
                stream.respond(200, _response_fields(headers, websocket=True), False)
                return
            if status == 101:
                raise HttpParserError("101 without an upgrade request")
            self.interim = True
            return
        if stream.websocket:
            if 200 <= status < 300:  # to an HTTP/2 client a 2xx would mean "tunnel open"
                self.error = "the backend did not switch protocols to websocket"
                raise HttpParserError(self.error)
            self.req_done = True  # a refused upgrade: the exchange ends with this response
        fields = _response_fields(headers)
        self.head_sent = True
        no_body = stream.is_head or status in (204, 304)
        if stream.is_head:
            # llhttp would wait for the body a HEAD response announces: end here, fresh parser later.
            self.keep = self.parser.should_keep_alive()
            self.finished = True
            self.new_parser = True
        elif not no_body and not any(n == b"content-length" for n, _ in fields) and not any(
                n == b"transfer-encoding" for n, _ in headers):
            self.until_close = True
        stream.respond(status, fields, no_body)
        if stream.is_head:
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.stream is not None and not self.finished:
            self.stream.send_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.finished or self.stream is None or self.upgraded:
            return
        self.keep = self.parser.should_keep_alive()
        self.finished = True
        self.stream.finish()
        self._complete()

    def _complete(self) -> None:
        """Response relayed: pool this connection if the exchange ended cleanly, else close it."""
        if not self.req_done:
            return  # the request body is still going up; end_body completes
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.relay = None
        if self.new_parser:
            self.parser = HttpResponseParser(self)
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        if self.keep and not self.until_close and not self.closed and not self.upgraded:
            self.pool.release(self)
        elif not self.closed:
            self.transport.close()


def _response_fields(headers: list[tuple[bytes, bytes]], websocket: bool = False) -> list[tuple[bytes, bytes]]:
    """Lowercase the backend's header names and drop those listed in its Connection header."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection" and value.lower() not in PLAIN_CONNECTION_TOKENS:
            named |= {t.strip().lower() for t in value.split(b",")} - PLAIN_CONNECTION_TOKENS
    out = []
    for name, value in headers:
        name = name.lower()
        if name in named or (websocket and name == b"sec-websocket-accept"):
            continue
        out.append((name, value))
    return out


# -- HTTP/2 backends ---------------------------------------------------------------------------------
def _h2_ssl_context() -> ssl.SSLContext:
    """TLS towards https:// backends offering h2 first (no verification, like the HTTP/1.1 path)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


class NotH2(Exception):
    """The https:// backend did not choose h2 by ALPN: use HTTP/1.1 for it."""


async def _h2_exchange(stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]],
                       pool: "H2Pool") -> None:
    try:
        conn = await pool.get()
    except NotH2:
        start_exchange(stream, backend, fields)  # the registry now knows: HTTP/1.1
        return
    except (OSError, asyncio.TimeoutError, h2.exceptions.H2Error) as exc:
        _connect_failed(stream, backend, fields, exc)
        return
    if stream.ended:
        return
    conn.open_stream(stream, backend, fields)


class H2Pool:
    """Multiplexed HTTP/2 connections to one backend address; a new one only when all are full."""

    def __init__(self, registry: "Upstreams", key: tuple[str, str, int]) -> None:
        self.registry = registry
        self.key = key
        self.conns: list[H2Backend] = []
        self.connecting: asyncio.Future[H2Backend] | None = None
        self.closed = False
        self._ssl = _h2_ssl_context() if key[0] == "https" else None

    async def get(self) -> "H2Backend":
        for conn in self.conns:
            if conn.has_capacity():
                return conn
        if self.connecting is not None:
            conn = await asyncio.shield(self.connecting)
            if conn.has_capacity():
                return conn
        fut: asyncio.Future[H2Backend] = self.registry.loop.create_future()
        self.connecting = fut
        try:
            conn = await self._connect()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self.connecting = None
        fut.set_result(conn)
        return conn

    async def _connect(self) -> "H2Backend":
        scheme, host, port = self.key
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs = {"ssl": self._ssl, "server_hostname": host}
        transport, conn = await asyncio.wait_for(
            self.registry.loop.create_connection(lambda: H2Backend(self), host, port, **kwargs), CONNECT_TIMEOUT)
        if self._ssl is not None:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                self.registry.h2_ok[self.key] = False
                transport.close()
                raise NotH2()
            self.registry.h2_ok[self.key] = True
        if conn.dead:
            raise ConnectionResetError("the backend closed the connection")
        self.conns.append(conn)
        return conn

    def sweep(self, now: float, idle_timeout: float) -> None:
        for conn in list(self.conns):
            if not conn.relays and now - conn.t_idle > idle_timeout:
                conn.close()

    def close(self) -> None:
        self.closed = True
        for conn in list(self.conns):
            conn.close()


class H2Backend(asyncio.Protocol):
    """One HTTP/2 connection to a backend (the `h2` library's client side)."""

    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.relays: dict[int, H2Relay] = {}
        self.dead = False
        self.t_idle = time.monotonic()
        self.flush_scheduled = False

    def has_capacity(self) -> bool:
        if self.dead:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.relays) < min(limit, 1000) and self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH)  # type: ignore[attr-defined]
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: UPSTREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
        })
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(UPSTREAM_CONN_WINDOW - F.DEFAULT_WINDOW)
        self.flush()

    def flush(self) -> None:
        if self.flush_scheduled:
            return
        self.flush_scheduled = True
        self.pool.registry.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self.dead:
            self.transport.write(data)

    def open_stream(self, stream: "H2Stream", backend: "BackendState", fields: list[tuple[bytes, bytes]]) -> None:
        req = stream.req
        assert req is not None
        sid = self.h2.get_next_available_stream_id()
        relay = H2Relay(self, sid, stream)
        self.relays[sid] = relay
        stream.relay = relay
        scheme = b"https" if self.pool.key[0] == "https" else b"http"
        path = req.path if req.path == b"*" else backend.prefix + req.path
        route = stream.route
        assert route is not None
        authority = route.upstream_authority(backend, req.authority)
        head = [(b":method", req.method), (b":scheme", scheme), (b":authority", authority), (b":path", path)]
        head += fields
        if req.content_length >= 0:
            head.append((b"content-length", b"%d" % req.content_length))
        body = stream.buffered
        stream.buffered = None
        end = stream.remote_closed and not body
        try:
            self.h2.send_headers(sid, head, end_stream=end)
        except h2.exceptions.H2Error as exc:
            self.relays.pop(sid, None)
            stream.upstream_failed(f"cannot send the request to the backend ({exc})")
            return
        if stream.paused:
            relay.pause_reading()
        if body:
            n = 0
            for chunk in body:
                relay.send_body(chunk)
                n += len(chunk)
            if stream.remote_closed:
                relay.end_body()
            if relay.writable():
                stream.ack(n)
            else:
                stream.owed += n
        self.flush()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self._fail_all(f"HTTP/2 protocol error from the backend ({exc})")
            self.transport.close()
            return
        for ev in events:
            relay = self.relays.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.DataReceived):
                if relay is None:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    relay.on_data(ev.data, ev.flow_controlled_length)
            elif isinstance(ev, h2.events.ResponseReceived):
                if relay is not None:
                    relay.on_response(ev.headers, ev.stream_ended is not None)  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.TrailersReceived):
                if relay is not None:
                    relay.on_end(ev.headers)  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.StreamEnded):
                if relay is not None:
                    relay.on_end(None)
            elif isinstance(ev, h2.events.StreamReset):
                if relay is not None:
                    relay.on_reset(ev.error_code)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id:
                    if relay is not None:
                        relay.flush_body()
                else:
                    for r in list(self.relays.values()):
                        r.flush_body()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.dead = True
                self._fail_all("the backend closed the HTTP/2 connection (GOAWAY)", above=ev.last_stream_id)
        self.flush()

    def _fail_all(self, reason: str, above: int | None = None) -> None:
        for sid, relay in list(self.relays.items()):
            if above is None or sid > above:
                relay.fail(reason)

    def forget(self, sid: int) -> None:
        self.relays.pop(sid, None)
        if not self.relays:
            self.t_idle = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        try:
            self.pool.conns.remove(self)
        except ValueError:
            pass
        self._fail_all("the backend closed the connection" if exc is None else str(exc))

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            try:
                self.h2.close_connection()
                self._flush()
            except h2.exceptions.H2Error:
                pass
            self.transport.close()


class H2Relay:
    """One stream on an `H2Backend`, bound to one client `H2Stream`."""

    __slots__ = ("backend", "sid", "stream", "pending", "end_pending", "trailers", "owed", "paused", "activity",
                 "done", "headers_seen")

    def __init__(self, backend: H2Backend, sid: int, stream: "H2Stream") -> None:
        self.backend = backend
        self.sid = sid
        self.stream: H2Stream | None = stream
        self.pending: list[bytes] = []
        self.end_pending = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.owed = 0
        self.paused = False
        self.activity = False
        self.done = False
        self.headers_seen = False

    # -- towards the backend --------------------------------------------------------------------
    def send_body(self, data: bytes) -> None:
        if self.done:
            return
        self.pending.append(data)
        self.flush_body()

    def end_body(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.done:
            return
        self.end_pending = True
        self.trailers = trailers
        self.flush_body()

    def flush_body(self) -> None:
        """Send queued request body within the backend's flow-control window."""
        conn = self.backend.h2
        sid = self.sid
        try:
            while self.pending:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = self.pending[0]
                if len(chunk) <= window:
                    self.pending.pop(0)
                    conn.send_data(sid, chunk)
                else:
                    conn.send_data(sid, chunk[:window])
                    self.pending[0] = chunk[window:]
            if not self.pending and self.end_pending:
                self.end_pending = False
                if self.trailers:
                    conn.send_headers(sid, self.trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            self.pending = []
            return
        except h2.exceptions.H2Error as exc:
            self.fail(f"cannot relay the request body ({exc})")
            return
        self.backend.flush()
        stream = self.stream
        if not self.pending and stream is not None:
            stream.resume_body()

    def writable(self) -> bool:
        return not self.pending

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self.owed and not self.done:
            owed, self.owed = self.owed, 0
            self._ack(owed)

    def _ack(self, n: int) -> None:
        try:
            self.backend.h2.acknowledge_received_data(n, self.sid)
        except h2.exceptions.H2Error:
            return
        self.backend.flush()

    def abort(self) -> None:
        """The client reset the stream (or it timed out): cancel it at the backend too."""
        if self.done:
            return
        self._close()
        try:
            self.backend.h2.reset_stream(self.sid, F.CANCEL)
        except h2.exceptions.H2Error:
            pass
        self.backend.flush()

    def take_activity(self) -> bool:
        act, self.activity = self.activity, False
        return act

    # -- from the backend -------------------------------------------------------------------------
    def on_response(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.activity = True
        stream = self.stream
        if stream is None:
            return
        status = 502
        fields = []
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[:1] != b":":
                fields.append((name, value))
        self.headers_seen = True
        stream.respond(status, fields, end)
        if end:
            self._close()

    def on_data(self, data: bytes, flow: int) -> None:
        self.activity = True
        stream = self.stream
        if stream is None:
            self._ack(flow)
            return
        stream.send_body(data)
        if self.paused:
            self.owed += flow
        else:
            self._ack(flow)

    def on_end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        stream = self.stream
        if stream is None:
            return
        if not self.headers_seen:
            self.fail("the backend ended the stream without a response")
            return
        self._close()
        stream.finish(trailers)

    def on_reset(self, code: int) -> None:
        stream = self.stream
        self._close()
        if stream is None:
            return
        if not self.headers_seen:
            stream.upstream_failed(f"the backend reset the stream (error code {code})")
        else:
            stream.upstream_reset(code)

    def fail(self, reason: str) -> None:
        stream = self.stream
        self._close()
        if stream is not None:
            stream.upstream_failed(reason)

    def _close(self) -> None:
        self.done = True
        stream, self.stream = self.stream, None
        if stream is not None and stream.relay is self:
            stream.relay = None
        self.backend.forget(self.sid)


class Upstreams:
    """Pools the HTTP/2 side uses, by backend address: HTTP/1.1 keep-alive and HTTP/2 multiplexed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_idle: int, idle_timeout: float, via: bool) -> None:
        self.loop = loop
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.via = via
        self.h1: dict[tuple[str, str, int], H1Pool] = {}
        self.h2: dict[tuple[str, str, int], H2Pool] = {}
        self.h2_ok: dict[tuple[str, str, int], bool] = {}  # https backends: did ALPN choose h2?

    def h1_pool(self, key: tuple[str, str, int]) -> H1Pool:
        pool = self.h1.get(key)
        if pool is None:
            pool = self.h1[key] = H1Pool(self.loop, *key, max_idle=self.max_idle, idle_timeout=self.idle_timeout,
                                         via=self.via)
        return pool

    def h2_pool(self, key: tuple[str, str, int]) -> H2Pool:
        pool = self.h2.get(key)
        if pool is None:
            pool = self.h2[key] = H2Pool(self, key)
        return pool

    def sweep(self, now: float) -> None:
        for h1pool in self.h1.values():
            h1pool.sweep(now)
        for h2pool in self.h2.values():
            h2pool.sweep(now, self.idle_timeout)

    def prune(self, live: set[tuple[str, str, int]]) -> None:
        """Close the pools of backends that left the route table."""
        for table in (self.h1, self.h2):
            for key in [k for k in table if k not in live]:
                table.pop(key).close()  # type: ignore[attr-defined]
        for key in [k for k in self.h2_ok if k not in live]:
            del self.h2_ok[key]

    def close(self) -> None:
        self.prune(set())
