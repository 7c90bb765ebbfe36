"""HTTP/2 on the HTTPS listener (ALPN `h2`): a lean server-side framing layer over `hpack`.

One `H2Protocol` per client connection parses frames, keeps flow control both ways and turns
each request stream into an `H2Stream`, which routes it exactly like the HTTP/1.1 path (Host
routing by :authority, 421 against the TLS name, pages, hook, balancer) and relays it through
an upstream exchange from `h2_upstream` (HTTP/1.1 pooled, or HTTP/2 multiplexed for `h2c://`
and `https://` backends that negotiate h2). Why not the `h2` library here: see the README.

Defences (each answered with GOAWAY and the connection closed): frame-level protocol errors,
header blocks over `max_header_size` (compressed or decoded: HPACK bombs), CONTINUATION floods,
control-frame floods (SETTINGS, PING, PRIORITY, RST_STREAM), rapid reset, and clients that
exceed the concurrent-stream limit repeatedly. Streams that make no progress for
`idle_timeout` (a client that never opens its window) are reset and their upstream closed.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from hpack import Decoder
from hpack.exceptions import HPACKError, OversizedHeaderListError

from gotunnel_core import pages
from gotunnel_core.dotsegments import has_dot_segment
from gotunnel_core.lan import is_localhost_host, is_loopback_peer

from . import h2_frames as F
from .h2_upstream import start_exchange
from .hooks import run_request_hook
from .metrics import record_h2
from .protocol import LOST, TLS_READ_BUFFER
from .tracing import start_stream_span
from .responses import date_header
from .upstream import WRITE_HIGH

if TYPE_CHECKING:
    from .balancer import BackendState
    from .router import Route
    from .state import ProxyState

IDLE, BUSY, CLOSED = 0, 2, 5  # the phases the engine looks at (same values as protocol.py)

MAX_CONCURRENT_STREAMS = 100
STREAM_WINDOW = 256 * 1024  # what a client may send on one stream before the backend took it
CONN_WINDOW = 16 * 1024 * 1024  # connection-level receive window (acknowledged as data arrives)
ACK_THRESHOLD = 64 * 1024  # batch WINDOW_UPDATEs
PENDING_HIGH = 256 * 1024  # response bytes queued on a stream (window closed) before its upstream pauses
MAX_CONTINUATIONS = 32  # CONTINUATION frames in one header block
FLOOD_WINDOW = 1.0  # seconds over which control frames and early resets are counted
MAX_CONTROL_FRAMES = 1000  # SETTINGS/PING/PRIORITY/RST_STREAM/empty DATA per FLOOD_WINDOW
MAX_EARLY_RESETS = 2 * MAX_CONCURRENT_STREAMS  # streams reset by the client before their response ended
MAX_REFUSED = 2 * MAX_CONCURRENT_STREAMS  # streams beyond the advertised limit after it was acknowledged
NO_SNI = object()

_NAME_OK = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z").match
_VALUE_BAD = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z").search
_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))
#: Connection-specific fields: a request carrying one is malformed (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
#: Request fields the proxy rebuilds or drops when forwarding.
_REQ_REBUILT = frozenset((b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"te",
                          b"content-length", b"cookie", b"gotunnel-hop"))
#: Response fields never forwarded to an HTTP/2 client.
_RESP_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"))
HTML = b"text/html; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"


class H2Error(Exception):
    """A connection error: GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error: RST_STREAM with `code`; the connection goes on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Request:
    """A validated request head (cached per header block while the HPACK table is unchanged)."""

    __slots__ = ("method", "scheme", "path", "authority", "protocol", "fields", "content_length", "cookies",
                 "xff", "host", "hop")

    def __init__(self) -> None:
        self.method = b""
        self.scheme = b""
        self.path = b""
        self.authority = b""
        self.protocol = b""
        self.fields: list[tuple[bytes, bytes]] = []  # regular fields, minus the rebuilt ones
        self.content_length = -1
        self.cookies: list[bytes] = []
        self.xff: bytes = b""
        self.host: bytes = b""
        self.hop: bytes = b""  # the loop marker a request arrived with (gotunnel_core.loops)


def parse_request(headers: list[tuple[bytes, bytes]]) -> Request:
    """Validate a decoded request header list (RFC 9113 sections 8.2, 8.3; RFC 8441); raise StreamError."""
    req = Request()
    seen: set[bytes] = set()
    regular = False
    fields = req.fields
    for name, value in headers:
        if name[:1] == b":":
            if regular or name not in _PSEUDO or name in seen:
                raise StreamError(F.PROTOCOL_ERROR, f"bad pseudo-header {name!r}")
            seen.add(name)
            if _VALUE_BAD(value):
                raise StreamError(F.PROTOCOL_ERROR, f"bad value of {name!r}")
            setattr(req, name[1:].decode(), value)
            continue
        regular = True
        if not _NAME_OK(name):
            raise StreamError(F.PROTOCOL_ERROR, f"bad header name {name!r}")
        if _VALUE_BAD(value):
            raise StreamError(F.PROTOCOL_ERROR, f"bad value of {name!r}")
        if name in _REQ_REBUILT:
            if name == b"cookie":
                req.cookies.append(value)
            elif name == b"content-length":
                if not value.isdigit() or (req.content_length >= 0 and int(value) != req.content_length):
                    raise StreamError(F.PROTOCOL_ERROR, "bad content-length")
                req.content_length = int(value)
            elif name == b"te":
                if value != b"trailers":
                    raise StreamError(F.PROTOCOL_ERROR, "TE other than trailers")
                fields.append((name, value))
            elif name == b"x-forwarded-for":
                req.xff = value if not req.xff else req.xff + b", " + value
            elif name == b"host":
                if req.host:
                    raise StreamError(F.PROTOCOL_ERROR, "more than one host")
                req.host = value
            elif name == b"gotunnel-hop":
                req.hop = value
            continue
        if name in _CONNECTION_SPECIFIC:
            raise StreamError(F.PROTOCOL_ERROR, f"connection-specific header {name!r}")
        fields.append((name, value))
    if not req.method:
        raise StreamError(F.PROTOCOL_ERROR, "no :method")
    if req.method == b"CONNECT":
        if not req.protocol:
            if req.scheme or req.path:
                raise StreamError(F.PROTOCOL_ERROR, "CONNECT with :scheme or :path")
        elif not (req.scheme and req.path and req.authority):
            raise StreamError(F.PROTOCOL_ERROR, "extended CONNECT without :scheme, :path or :authority")
    else:
        if req.protocol:
            raise StreamError(F.PROTOCOL_ERROR, ":protocol without CONNECT")
        if not req.scheme or not req.path:
            raise StreamError(F.PROTOCOL_ERROR, "no :scheme or :path")
        if req.path[:1] != b"/" and not (req.path == b"*" and req.method == b"OPTIONS"):
            raise StreamError(F.PROTOCOL_ERROR, "bad :path")
    if not req.authority:
        req.authority = req.host
    elif req.host and req.host != req.authority:
        raise StreamError(F.PROTOCOL_ERROR, "host differs from :authority")
    return req


_PAIRS_CACHE: dict[Any, tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]] = {}


def route_pairs(route: "Route") -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The tunnel's added request and response headers as lowercase (name, value) pairs."""
    hit = _PAIRS_CACHE.get(route)
    if hit is None:
        rules = route.tunnel.headers
        hit = ([(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in rules.request.add],
               [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in rules.response.add])
        if len(_PAIRS_CACHE) > 4096:
            _PAIRS_CACHE.clear()
        _PAIRS_CACHE[route] = hit
    return hit


class H2Stream:
    """One request/response exchange on an HTTP/2 connection: routing, flow control, relay state."""

    __slots__ = (
        "conn", "sid", "req", "send_window", "unacked", "remote_closed", "local_closed", "head_sent",
        "pending", "pending_size", "pending_end", "pending_trailers", "relay", "route", "backend", "tried",
        "received", "buffered", "activity", "t_active", "paused", "is_head", "websocket", "discard", "ended",
        "owed", "recv_window", "t_sent", "t0", "status", "sent", "span",
    )

    def __init__(self, conn: "H2Protocol", sid: int, send_window: int) -> None:
        self.conn = conn
        self.sid = sid
        self.req: Request | None = None
        self.send_window = send_window
        self.unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.head_sent = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.pending_end = False
        self.pending_trailers: list[tuple[bytes, bytes]] | None = None
        self.relay: Any = None
        self.route: Route | None = None
        self.backend: BackendState | None = None
        self.tried: list[BackendState] | None = None
        self.received = 0
        self.buffered: list[bytes] | None = None  # request body that arrived before the relay existed
        self.activity = True
        self.t_active = time.monotonic()
        self.paused = 0  # reasons the relay's response reading is paused: 1 window, 2 client transport
        self.is_head = False
        self.websocket = False
        self.discard = False
        self.ended = False  # removed from the connection
        self.owed = 0  # body bytes forwarded to a relay that could not take more: acknowledged on resume
        self.recv_window = STREAM_WINDOW
        self.t_sent = 0.0  # when the client's request ended: the backend's first-byte timer (upstream_timeout)
        self.t0 = self.t_active  # metrics: latency from the request head, final status, body bytes sent
        self.status = 0
        self.sent = 0
        self.span: Any = None

    # -- request side (called by the connection) ----------------------------------------------
    def on_data(self, data: bytes, end: bool) -> None:
        self.activity = True
        self.received += len(data)
        req = self.req
        if req is not None and req.content_length >= 0 and (
                self.received > req.content_length or (end and self.received != req.content_length)):
            self.conn.reset_stream(self, F.PROTOCOL_ERROR)
            return
        if end:
            self.remote_closed = True
            self.t_sent = time.monotonic()
        if self.discard:
            self.ack(len(data))
            return
        relay = self.relay
        if relay is None:
            if data:
                if self.buffered is None:
                    self.buffered = []
                self.buffered.append(data)
            return
        if data:
            relay.send_body(data)
        if end:
            relay.end_body()
        if data:
            if relay.writable():
                self.ack(len(data))
            else:
                self.owed += len(data)
        if end and self.local_closed:
            self.conn._forget(self)

    def ack(self, n: int) -> None:
        """The backend side took `n` body bytes: let the client send that many more."""
        if self.remote_closed or self.conn.closed:
            return
        self.unacked += n
        if self.unacked >= ACK_THRESHOLD:
            self.conn.queue(F.window_update(self.sid, self.unacked))
            self.recv_window += self.unacked
            self.unacked = 0

    def resume_body(self) -> None:
        """The relay's transport drained: acknowledge what was held back."""
        if self.owed:
            owed, self.owed = self.owed, 0
            self.ack(owed)

    def on_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.remote_closed = True
        self.t_sent = time.monotonic()
        if self.relay is not None and not self.discard:
            self.relay.end_body(fields)
        if self.local_closed:
            self.conn._forget(self)

    # -- response side (called by the relay) ----------------------------------------------------
    def respond(self, status: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """Send the response head; `fields` are lowercase (name, value) from the backend."""
        if self.local_closed or self.ended:
            return
        self.activity = True
        route = self.route
        drop = route.resp_drop if route is not None else None
        out = [(b"date", date_header()[6:-2])] if not any(n == b"date" for n, _ in fields) else []
        for name, value in fields:
            if name in _RESP_DROP or (drop and name in drop) or name[:1] == b":":
                continue
            out.append((name, value))
        if route is not None and route.resp_add:
            out += route_pairs(route)[1]
        if self.conn.st.settings.via:
            out.append((b"via", b"2 gotunnel"))
        self.head_sent = True
        if status >= 200 or status == 101:
            self.status = status
        block = F.status_field(status) + F.encode_headers(out)
        self.conn.send_headers(self, block, end)

    def send_body(self, data: bytes) -> None:
        if self.local_closed or self.ended or not data:
            return
        self.activity = True
        if self.pending:
            self.pending.append(data)
            self.pending_size += len(data)
        else:
            self.conn.send_data(self, data, False)
        if self.pending_size > PENDING_HIGH:
            self.pause_upstream(1)

    def finish(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The response ended (with optional trailers)."""
        if self.local_closed or self.ended:
            return
        if self.pending:
            self.pending_end = True
            self.pending_trailers = trailers
            return
        self._end(trailers)

    def _end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        if trailers:
            self.conn.send_headers(self, F.encode_headers([(n, v) for n, v in trailers if n not in _RESP_DROP]), True)
        else:
            self.conn.send_data(self, b"", True)

    def flush_pending(self) -> None:
        """The window opened: send what was queued."""
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending = []
        self.pending_size = 0
        self.conn.send_data(self, data, False)
        if not self.pending:
            if self.pending_end:
                self.pending_end = False
                self._end(self.pending_trailers)
            self.resume_upstream(1)
        elif self.pending_size <= PENDING_HIGH:
            self.resume_upstream(1)

    def pause_upstream(self, reason: int) -> None:
        if not self.paused and self.relay is not None:
            self.relay.pause_reading()
        self.paused |= reason

    def resume_upstream(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.relay is not None:
                self.relay.resume_reading()

    def upstream_failed(self, reason: str) -> None:
        """The backend failed: 502 if nothing was sent yet, else reset the stream."""
        self.relay = None
        if self.ended:
            return
        self.conn.st.upstream_errors += 1
        if self.route is not None:
            self.route.stats.upstream_errors += 1
        if not self.head_sent and self.backend is not None:
            self.conn.bad_gateway(self, self.backend, reason)
        else:
            self.conn.reset_stream(self, F.INTERNAL_ERROR)

    def upstream_reset(self, code: int) -> None:
        """An HTTP/2 backend reset its stream: pass the code on."""
        self.relay = None
        if not self.ended:
            self.conn.reset_stream(self, code)


class H2Protocol(asyncio.BufferedProtocol):
    """The server side of one HTTP/2 connection (TLS, ALPN h2).

    Buffered so the TLS layer decrypts into the process's shared read buffer (see
    protocol.TlsClientProtocol); `data_received` does the work.
    """

    def __init__(self, st: "ProxyState", sni: object) -> None:
        self.st = st
        self.loop = st.loop
        self.sni = sni
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: tuple[str, int] = ("", 0)
        self.peer_ip = b""
        self.buf = b""
        self.preface = False
        self.got_settings = False
        self.settings_acked = False
        self.streams: dict[int, H2Stream] = {}
        self.last_sid = 0  # highest stream id the client opened
        self.dispatched_sid = 0  # highest stream id handed to a backend (GOAWAY's last-stream-id)
        self.ready: list[H2Stream] = []  # streams routed after the current read is fully parsed
        self.decoder = Decoder()
        self.decoder.max_header_list_size = st.settings.max_header_size
        self.block_cache: dict[bytes, Request] = {}
        self.cont: bytearray | None = None  # header block being continued
        self.cont_sid = 0
        self.cont_end = False
        self.cont_frames = 0
        self.peer_window = F.DEFAULT_WINDOW  # peer's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_frame = F.DEFAULT_FRAME_SIZE
        self.send_window = F.DEFAULT_WINDOW  # connection-level send window
        self.conn_unacked = 0
        self.conn_recv = CONN_WINDOW
        self.blocked: dict[int, H2Stream] = {}  # streams with pending data, in order
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.write_paused = False
        self.closed = False
        self.goaway_sent = False
        self.client_goaway = False
        self.phase = IDLE
        self.t_idle = time.monotonic()
        self.t_write_paused = 0.0
        self.flood_t = 0.0
        self.control_frames = 0
        self.early_resets = 0
        self.refused = 0
        self.lan = False  # a LAN peer: plain pages, no `.localhost`, no `lan = false` tunnels

    # -- lifecycle --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        st = self.st
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
            self.peer_ip = peer[0].encode("ascii")
            self.lan = not is_loopback_peer(peer[0])
        st.conns.add(self)  # type: ignore[arg-type]
        transport.set_write_buffer_limits(WRITE_HIGH)  # type: ignore[attr-defined]
        self.flood_t = time.monotonic()
        self.queue(F.settings_frame({
            F.S_MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            F.S_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            F.S_MAX_HEADER_LIST_SIZE: st.settings.max_header_size,
            F.S_ENABLE_CONNECT_PROTOCOL: 1,
        }))
        self.queue(F.window_update(0, CONN_WINDOW - F.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.phase = CLOSED
        self.st.conns.discard(self)  # type: ignore[arg-type]
        for stream in list(self.streams.values()):
            self._drop(stream)
            self._end_dropped(stream)
        self.streams.clear()
        self.blocked.clear()
        self.transport = LOST  # type: ignore[assignment]  # no cycle with a transport keeping our methods

    def close(self) -> None:
        """Graceful close (timeouts, shutdown): GOAWAY NO_ERROR, then close after the write."""
        if not self.closed:
            self.connection_error(F.NO_ERROR, "")

    def connection_error(self, code: int, message: str) -> None:
        if self.closed:
            return
        if self.st.log is not None and code != F.NO_ERROR:
            self.st.log.info("http2 connection error", peer=self.peer[0], code=code, reason=message)
        self.goaway_sent = True
        self.out.append(F.goaway(self.dispatched_sid, code, message.encode("ascii", "replace")[:64]))
        self._flush()
        self.closed = True
        self.phase = CLOSED
        for stream in list(self.streams.values()):
            self._drop(stream)
            self._end_dropped(stream)
        self.streams.clear()
        self.transport.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.t_write_paused = time.monotonic()
        for stream in self.streams.values():
            stream.pause_upstream(2)

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.resume_upstream(2)

    # -- output -----------------------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        """Frames are batched and written once per event-loop turn (one TLS record, one syscall)."""
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        out = self.out
        if out and not self.closed:
            self.out = []
            # One buffer: the TLS transport makes one record per piece it is handed.
            self.transport.write(b"".join(out))

    def send_headers(self, stream: H2Stream, block: bytes, end: bool) -> None:
        for f in F.headers_frames(stream.sid, block, end, self.peer_frame):
            self.queue(f)
        if end:
            self._local_end(stream)

    def send_data(self, stream: H2Stream, data: bytes, end: bool) -> None:
        """DATA frames within both windows; the rest waits in `stream.pending`."""
        size = len(data)
        stream.sent += size
        if size:
            allowed = min(self.send_window, stream.send_window)
            if allowed <= 0:
                stream.pending.append(data)
                stream.pending_size += size
                self.blocked[stream.sid] = stream
                if end:
                    stream.pending_end = True
                return
            if size > allowed:
                rest = data[allowed:]
                data = data[:allowed]
                stream.pending.append(rest)
                stream.pending_size += len(rest)
                self.blocked[stream.sid] = stream
                size = allowed
                if end:
                    stream.pending_end = True
                    end = False
            self.send_window -= size
            stream.send_window -= size
            fmax = self.peer_frame
            if size <= fmax:
                self.out.append(F.data_header(size, F.END_STREAM if end else 0, stream.sid))
                self.out.append(data)
            else:
                view = memoryview(data)
                for i in range(0, size, fmax):
                    piece = view[i:i + fmax]
                    last = i + fmax >= size
                    self.out.append(F.data_header(len(piece), F.END_STREAM if end and last else 0, stream.sid))
                    self.out.append(piece)  # type: ignore[arg-type]
        else:
            self.out.append(F.data_header(0, F.END_STREAM if end else 0, stream.sid))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if end:
            self._local_end(stream)

    def _local_end(self, stream: H2Stream) -> None:
        stream.local_closed = True
        if not stream.remote_closed:
            # A complete response to a request whose body is still coming (an early answer):
            # tell the client to stop sending (RFC 9113 section 8.1).
            if stream.discard or stream.relay is None:
                self.queue(F.rst_stream(stream.sid, F.NO_ERROR))
                stream.remote_closed = True
            else:
                return  # the backend answered early but still reads the body: keep relaying it
        self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        if not stream.ended:
            stream.ended = True
            if stream.route is not None:
                record_h2(stream)
            self.streams.pop(stream.sid, None)
            self.blocked.pop(stream.sid, None)
            if not self.streams:
                self.phase = IDLE
                self.t_idle = time.monotonic()
                if self.st.closing or (self.client_goaway and not self.ready):
                    self.close()

    def reset_stream(self, stream: H2Stream, code: int) -> None:
        """RST_STREAM towards the client, drop the upstream side."""
        if stream.ended:
            return
        self.queue(F.rst_stream(stream.sid, code))
        stream.local_closed = stream.remote_closed = True
        self._drop(stream)
        self._forget(stream)

    @staticmethod
    def _end_dropped(stream: H2Stream) -> None:
        """A stream cut off with its connection: it ends here (and is counted once)."""
        if not stream.ended:
            stream.ended = True
            if stream.route is not None:
                record_h2(stream)

    def _drop(self, stream: H2Stream) -> None:
        relay = stream.relay
        stream.relay = None
        stream.pending = []
        stream.pending_size = 0
        if relay is not None:
            relay.abort()

    # -- input ------------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return TLS_READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(TLS_READ_BUFFER[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos = 0
        if not self.preface:
            if len(data) < 24:
                if not F.PREFACE.startswith(data):
                    return self.connection_error(F.PROTOCOL_ERROR, "bad connection preface")
                self.buf = data
                return
            if data[:24] != F.PREFACE:
                return self.connection_error(F.PROTOCOL_ERROR, "bad connection preface")
            self.preface = True
            pos = 24
        end = len(data)
        try:
            while end - pos >= 9:
                length = int.from_bytes(data[pos:pos + 3], "big")
                if length > F.DEFAULT_FRAME_SIZE:
                    raise H2Error(F.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                if end - pos - 9 < length:
                    break
                ftype = data[pos + 3]
                flags = data[pos + 4]
                sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = data[pos + 9:pos + 9 + length]
                pos += 9 + length
                self._frame(ftype, flags, sid, payload)
                if self.closed:
                    return
        except H2Error as exc:
            self.ready = []
            self.connection_error(exc.code, str(exc))
            return
        if pos < end:
            self.buf = data[pos:]
        if self.ready:
            ready, self.ready = self.ready, []
            for stream in ready:
                if not stream.ended:
                    self._dispatch(stream)
        if self.conn_unacked >= ACK_THRESHOLD:
            self.queue(F.window_update(0, self.conn_unacked))
            self.conn_recv += self.conn_unacked
            self.conn_unacked = 0

    def eof_received(self) -> bool:
        return False

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.cont is not None and ftype != F.CONTINUATION:
            raise H2Error(F.PROTOCOL_ERROR, "expected CONTINUATION")
        if not self.got_settings and ftype != F.SETTINGS:
            raise H2Error(F.PROTOCOL_ERROR, "first frame is not SETTINGS")
        if ftype == F.DATA:
            self._on_data(flags, sid, payload)
        elif ftype == F.HEADERS:
            self._on_headers(flags, sid, payload)
        elif ftype == F.CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif ftype == F.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == F.SETTINGS:
            self._on_settings(flags, sid, payload)
        elif ftype == F.PING:
            if sid:
                raise H2Error(F.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2Error(F.FRAME_SIZE_ERROR, "PING of wrong size")
            if not flags & F.ACK:
                self._count_control()
                self.queue(F.frame(F.PING, F.ACK, 0, payload))
        elif ftype == F.RST_STREAM:
            self._on_rst(sid, payload)
        elif ftype == F.PRIORITY:
            if not sid:
                raise H2Error(F.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise H2Error(F.FRAME_SIZE_ERROR, "PRIORITY of wrong size")
            self._count_control()
        elif ftype == F.GOAWAY:
            if sid:
                raise H2Error(F.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(F.FRAME_SIZE_ERROR, "GOAWAY too short")
            self.client_goaway = True
            if not self.streams:
                self.close()
        elif ftype == F.PUSH_PROMISE:
            raise H2Error(F.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 section 5.5)

    def _count_control(self) -> None:
        now = time.monotonic()
        if now - self.flood_t > FLOOD_WINDOW:
            self.flood_t = now
            self.control_frames = 0
            self.early_resets = 0
        self.control_frames += 1
        if self.control_frames > MAX_CONTROL_FRAMES:
            raise H2Error(F.ENHANCE_YOUR_CALM, "control frame flood")

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & F.PADDED:
            if not payload:
                raise H2Error(F.FRAME_SIZE_ERROR, "padded frame without pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise H2Error(F.PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1:len(payload) - pad]
        return payload

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2Error(F.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & F.ACK:
            if payload:
                raise H2Error(F.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self.settings_acked = True
            return
        if len(payload) % 6:
            raise H2Error(F.FRAME_SIZE_ERROR, "SETTINGS of wrong size")
        if self.got_settings:
            self._count_control()
        self.got_settings = True
        for i in range(0, len(payload), 6):
            key = int.from_bytes(payload[i:i + 2], "big")
            value = int.from_bytes(payload[i + 2:i + 6], "big")
            if key == F.S_INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise H2Error(F.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > F.MAX_WINDOW:
                        raise H2Error(F.FLOW_CONTROL_ERROR, "stream window overflow")
                if delta > 0:
                    self._unblock()
            elif key == F.S_MAX_FRAME_SIZE:
                if not F.DEFAULT_FRAME_SIZE <= value <= F.MAX_FRAME_SIZE_LIMIT:
                    raise H2Error(F.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.peer_frame = value
            elif key == F.S_ENABLE_PUSH:
                if value > 1:
                    raise H2Error(F.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            elif key == F.S_ENABLE_CONNECT_PROTOCOL:
                if value > 1:
                    raise H2Error(F.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_CONNECT_PROTOCOL")
            # HEADER_TABLE_SIZE: our encoder never uses a dynamic table; others are advisory.
        self.queue(F.frame(F.SETTINGS, F.ACK, 0))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE of wrong size")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not sid:
            if not inc:
                raise H2Error(F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > F.MAX_WINDOW:
                raise H2Error(F.FLOW_CONTROL_ERROR, "connection window overflow")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_sid:
                raise H2Error(F.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return  # a stream that ended: nothing to do
        if not inc:
            self.reset_stream(stream, F.PROTOCOL_ERROR)
            return
        stream.send_window += inc
        stream.activity = True
        if stream.send_window > F.MAX_WINDOW:
            self.reset_stream(stream, F.FLOW_CONTROL_ERROR)
            return
        if stream.pending:
            stream.flush_pending()
            if not stream.pending:
                self.blocked.pop(sid, None)

    def _unblock(self) -> None:
        for sid, stream in list(self.blocked.items()):
            if self.send_window <= 0:
                return
            if stream.send_window > 0:
                stream.flush_pending()
                if not stream.pending:
                    self.blocked.pop(sid, None)

    def _on_rst(self, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2Error(F.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(F.FRAME_SIZE_ERROR, "RST_STREAM of wrong size")
        if sid > self.last_sid:
            raise H2Error(F.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        self._count_control()
        stream = self.streams.get(sid)
        if stream is None:
            return
        if not stream.local_closed:
            # Rapid reset (CVE-2023-44487): every reset stream may have cost the backend a request.
            self.early_resets += 1
            if self.early_resets > MAX_EARLY_RESETS:
                raise H2Error(F.ENHANCE_YOUR_CALM, "too many streams reset")
        stream.local_closed = stream.remote_closed = True
        self._drop(stream)
        self._forget(stream)

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2Error(F.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.conn_recv -= size
        if self.conn_recv < 0:
            raise H2Error(F.FLOW_CONTROL_ERROR, "connection window exceeded")
        self.conn_unacked += size  # the connection window is given back at once; streams bound memory
        data = self._unpad(flags, payload)
        end = bool(flags & F.END_STREAM)
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_sid:
                raise H2Error(F.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we reset or answered: frames still in flight are ignored
        if stream.remote_closed:
            self.reset_stream(stream, F.STREAM_CLOSED)
            return
        if not size and not end:
            self._count_control()
        stream.recv_window -= size
        if stream.recv_window < 0:
            self.reset_stream(stream, F.FLOW_CONTROL_ERROR)
            return
        stream.on_data(data, end)
        if len(data) < size and not stream.ended:
            stream.ack(size - len(data))  # padding is consumed at once

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid or not sid & 1:
            raise H2Error(F.PROTOCOL_ERROR, "HEADERS on an invalid stream id")
        block = self._unpad(flags, payload)
        if flags & F.PRIORITY_FLAG:
            if len(block) < 5:
                raise H2Error(F.FRAME_SIZE_ERROR, "HEADERS priority too short")
            if int.from_bytes(block[:4], "big") & 0x7FFFFFFF == sid:
                raise H2Error(F.PROTOCOL_ERROR, "stream depends on itself")
            block = block[5:]
        end = bool(flags & F.END_STREAM)
        if not flags & F.END_HEADERS:
            if len(block) > self.st.settings.max_header_size:
                raise H2Error(F.ENHANCE_YOUR_CALM, "header block too large")
            self.cont = bytearray(block)
            self.cont_sid = sid
            self.cont_end = end
            self.cont_frames = 0
            return
        self._header_block(sid, bytes(block), end)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        cont = self.cont
        if cont is None or sid != self.cont_sid:
            raise H2Error(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        self.cont_frames += 1
        cont += payload
        if len(cont) > self.st.settings.max_header_size:
            raise H2Error(F.ENHANCE_YOUR_CALM, "header block too large")
        if self.cont_frames > MAX_CONTINUATIONS:
            raise H2Error(F.ENHANCE_YOUR_CALM, "CONTINUATION flood")
        if flags & F.END_HEADERS:
            self.cont = None
            self._header_block(sid, bytes(cont), self.cont_end)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self.decoder.decode(block, raw=True)  # type: ignore[return-value]
        except OversizedHeaderListError:
            raise H2Error(F.ENHANCE_YOUR_CALM, "header list larger than SETTINGS_MAX_HEADER_LIST_SIZE") from None
        except (HPACKError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise H2Error(F.COMPRESSION_ERROR, f"HPACK: {exc}") from None

    def _parse_block(self, block: bytes) -> Request:
        """Decode and validate; identical blocks decode identically while the dynamic table is unchanged."""
        cached = self.block_cache.get(block)
        if cached is not None:
            return cached
        table = self.decoder.header_table.dynamic_entries
        size, newest = len(table), (table[0] if table else None)
        headers = self._decode(block)
        req = parse_request(headers)  # may raise StreamError (after HPACK state was kept in step)
        if len(table) != size or (table[0] if table else None) is not newest:
            self.block_cache.clear()  # the table changed: earlier blocks may now decode differently
        else:
            if len(self.block_cache) >= 64:
                self.block_cache.clear()
            self.block_cache[block] = req
        return req

    def _header_block(self, sid: int, block: bytes, end: bool) -> None:
        stream = self.streams.get(sid)
        if sid <= self.last_sid:
            # Trailers on an open stream; anything else on an old stream id is an error.
            if stream is None or stream.remote_closed:
                self._decode(block)
                raise H2Error(F.STREAM_CLOSED if stream is None else F.PROTOCOL_ERROR, "HEADERS on a closed stream")
            if not end:
                raise H2Error(F.PROTOCOL_ERROR, "trailers without END_STREAM")
            fields = self._decode(block)
            if any(n[:1] == b":" for n, _ in fields):
                self.reset_stream(stream, F.PROTOCOL_ERROR)
                return
            req = stream.req
            if req is not None and req.content_length >= 0 and stream.received != req.content_length:
                self.reset_stream(stream, F.PROTOCOL_ERROR)
                return
            stream.on_trailers(fields)
            return
        self.last_sid = sid
        try:
            req = self._parse_block(block)
        except StreamError:
            self.queue(F.rst_stream(sid, F.PROTOCOL_ERROR))
            return
        if self.goaway_sent or self.client_goaway:
            self.queue(F.rst_stream(sid, F.REFUSED_STREAM))
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            if self.settings_acked:
                self.refused += 1
                if self.refused > MAX_REFUSED:
                    raise H2Error(F.ENHANCE_YOUR_CALM, "too many streams beyond SETTINGS_MAX_CONCURRENT_STREAMS")
            self.queue(F.rst_stream(sid, F.REFUSED_STREAM))
            return
        stream = H2Stream(self, sid, self.peer_window)
        stream.req = req
        stream.remote_closed = end
        if end:
            stream.t_sent = time.monotonic()
        if end and req.content_length > 0:
            self.queue(F.rst_stream(sid, F.PROTOCOL_ERROR))
            return
        self.streams[sid] = stream
        self.phase = BUSY
        self.ready.append(stream)

    # -- routing -----------------------------------------------------------------------------------
    def _dispatch(self, stream: H2Stream) -> None:
        st = self.st
        st.requests_total += 1
        req = stream.req
        assert req is not None
        if stream.sid > self.dispatched_sid:
            self.dispatched_sid = stream.sid
        router = st.router
        route = router.lookup(req.authority)
        if route is not None and not route.tunnel.https:
            route = None
        if route is not None and self.lan and (not route.tunnel.lan or is_localhost_host(req.authority.decode("latin-1"))):
            route = None  # `.localhost` names and `lan = false` tunnels answer loopback peers only
        if req.method == b"CONNECT" and not req.protocol:
            # Plain CONNECT asks for a tunnel to any host: gotunnel is a reverse proxy (every engine: 405).
            return self._page(stream, 405, None)
        if req.path == b"*":  # `OPTIONS *`: a question about the server, answered here (as on HTTP/1.1)
            return self.local(stream, 200, b"", b"")
        if route is None:
            return self._page(stream, 404, pages.table_not_found_page, req.authority.decode("latin-1"), router.table)
        stream.route = route
        if has_dot_segment(req.path):  # before the backend's path prefix is joined (gotunnel_core.dotsegments)
            return self._page(stream, 400, None)
        if req.hop and req.hop == router.hop_id:
            return self._page(stream, 508, pages.loop_page, route.name)
        sni = self.sni
        if not (sni is NO_SNI or sni == "" or sni == route.name):
            return self.local(stream, 421, b"Misdirected Request: the TLS name does not match Host\n", TEXT)
        path = req.path
        fields = req.fields
        if req.method == b"CONNECT":
            if req.protocol != b"websocket":
                return self.local(stream, 501, b"only the websocket protocol can be CONNECTed\n", TEXT)
            stream.websocket = True
        if st.hook_on:
            hook_headers = [(b"host", req.authority), *fields]
            if req.cookies:
                hook_headers.append((b"cookie", b"; ".join(req.cookies)))
            out = run_request_hook(st, req.method, path, hook_headers, route.name, self.peer, "https")
            if out.failed:
                return self.local(stream, 500, b"request hook failed\n", TEXT)
            if out.response is not None:
                hdrs, has_ct = out.answer_headers()
                return self.local(stream, out.response.status, out.response.body, b"" if has_ct else TEXT,
                                  [(n.lower(), v) for n, v in hdrs])
            path = out.path
            fields = []
            for n, v in out.headers or ():
                n = n.lower()
                if n == b"host" or n in _CONNECTION_SPECIFIC:
                    continue
                if n == b"cookie":
                    continue
                fields.append((n, v))
            cookie = [v for n, v in out.headers or () if n.lower() == b"cookie"]
            req = _with(req, path=path, fields=fields, cookies=cookie)
            stream.req = req
        if route.req_remove:
            fields = [(n, v) for n, v in req.fields if n not in route.req_remove]
        else:
            fields = list(req.fields)
        if req.cookies:
            fields.append((b"cookie", b"; ".join(req.cookies)))
        fields += (
            (b"x-forwarded-for", (req.xff + b", " + self.peer_ip) if req.xff else self.peer_ip),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", req.authority),
        )
        if route.req_add:
            fields += route_pairs(route)[0]
        if st.settings.via:
            fields.append((b"via", b"2 gotunnel"))
        fields.append((b"gotunnel-hop", router.hop_id))
        stream.is_head = req.method == b"HEAD"
        backend = route.balancer.pick()
        if backend is None:
            return self._page(stream, 503, pages.unavailable_page, route.name, [s.backend for s in route.balancer.states])
        if st.tracer is not None:
            fields = start_stream_span(st, stream, route, fields)
        start_exchange(stream, backend, fields)

    def _page(self, stream: H2Stream, status: int, detailed: "Callable[..., str] | None", *args: Any) -> None:
        """One of the proxy's own pages: the detailed one (`detailed(*args)`) to a loopback peer,
        the plain one (naming nothing) to a LAN peer or when there is no detailed one."""
        body = pages.plain_page(status) if self.lan or detailed is None else detailed(*args)
        self.local(stream, status, body.encode(), HTML)

    def bad_gateway(self, stream: H2Stream, backend: "BackendState", reason: str) -> None:
        route = stream.route
        self._page(stream, 502, pages.bad_gateway_page, route.name if route else "?", backend.backend.url, reason)

    def _upstream_timeout(self, stream: H2Stream, route: "Route") -> None:
        """The backend took the request but sent nothing within its tunnel's upstream timeout: 504."""
        self.st.upstream_errors += 1
        route.stats.upstream_errors += 1
        backend = stream.backend.backend.url if stream.backend is not None else "?"
        self._page(stream, 504, pages.gateway_timeout_page, route.name, backend, route.upstream_timeout)

    def local(self, stream: H2Stream, status: int, body: bytes, content_type: bytes,
              extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """An answer the proxy makes itself; a request body still coming is discarded."""
        if stream.ended or stream.local_closed:
            return
        stream.discard = True
        stream.buffered = None
        relay = stream.relay
        stream.relay = None
        if relay is not None:
            relay.abort()
        fields = [(b"date", date_header()[6:-2])]
        if extra:
            fields += extra
        if content_type:
            fields.append((b"content-type", content_type))
        if status not in (204, 304):
            fields.append((b"content-length", b"%d" % len(body)))
        stream.status = status
        block = F.status_field(status) + F.encode_headers(fields)
        head_only = stream.is_head or not body
        self.send_headers(stream, block, head_only)
        if not head_only:
            self.send_data(stream, body, True)
        if stream.owed:
            stream.ack(stream.owed)
            stream.owed = 0

    # -- timeouts -----------------------------------------------------------------------------------
    def check_timeouts(self, now: float, header_timeout: float, idle_timeout: float) -> None:
        """Called by the engine's sweeper: idle connections, streams without progress, stuck writes."""
        if self.closed:
            return
        if not self.got_settings:
            if now - self.t_idle > header_timeout:
                self.connection_error(F.SETTINGS_TIMEOUT if self.preface else F.PROTOCOL_ERROR,
                                      "no connection preface in time")
            return
        if self.write_paused and now - self.t_write_paused > idle_timeout:
            self.transport.abort()  # the client stopped reading: nothing can be written to it anyway
            return
        if not self.streams:
            if now - self.t_idle > idle_timeout:
                self.close()
            return
        for stream in list(self.streams.values()):
            relay = stream.relay
            route = stream.route
            if stream.t_sent and not stream.head_sent and relay is not None and route is not None \
                    and now - stream.t_sent > route.upstream_timeout:
                self._upstream_timeout(stream, route)
                continue
            if stream.activity or (relay is not None and relay.take_activity()):
                stream.activity = False
                stream.t_active = now
            elif now - stream.t_active > idle_timeout:
                if not stream.head_sent:
                    if not stream.remote_closed:
                        self.local(stream, 408, b"request body not received in time\n", TEXT)
                    else:
                        self.local(stream, 504, b"backend did not answer in time\n", TEXT)
                else:
                    self.reset_stream(stream, F.CANCEL)
        if self.out and not self.flush_scheduled:
            self._flush()


def _with(req: Request, **changes: Any) -> Request:
    """A copy of `req` with some attributes replaced (cached requests are shared)."""
    new = Request()
    for name in Request.__slots__:
        setattr(new, name, changes.get(name, getattr(req, name)))
    return new


def accept_h2(st: "ProxyState", transport: asyncio.BaseTransport, sslobj: Any) -> None:
    """Take an HTTPS connection whose ALPN chose h2 (`ProxyState.h2_accept`, called by
    TlsClientProtocol after the handshake): one `set_protocol`, nothing per request."""
    if len(st.conns) >= st.settings.max_connections or st.closing:
        st.rejected_total += 1
        transport.close()
        return
    st.connections_total += 1
    proto = H2Protocol(st, getattr(sslobj, "gotunnel_sni", NO_SNI))
    transport.set_protocol(proto)  # type: ignore[attr-defined]
    proto.connection_made(transport)
