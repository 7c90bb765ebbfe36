"""Client side: one asyncio protocol per accepted connection, parsing requests with httptools.

Each request is routed by Host (and SNI on HTTPS), its head rebuilt from the parsed headers
(hop-by-hop removed, X-Forwarded-* set) and sent to a pooled upstream connection; bodies are
re-framed and streamed with backpressure. Pipelined requests are queued and answered in order.

This module and upstream.py are the hot path. When Cython is present at install time they are
compiled, typed by protocol.pxd / upstream.pxd beside them (so these classes implement the
protocol interface themselves instead of subclassing asyncio.Protocol: a compiled class cannot
extend a Python one); the .py files stay the one source and run as they are without Cython.
"""

from __future__ import annotations

import asyncio
import collections
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from gotunnel_core import pages
from gotunnel_core.dotsegments import has_dot_segment
from gotunnel_core.lan import is_localhost_host, is_loopback_peer

from .hooks import run_request_hook
from .metrics import RouteCounters
from .request import Downstream, Req
from .responses import (
    CHUNK_END,
    CHUNKED,
    CRLF,
    PLAIN_CONNECTION_TOKENS,
    REQ_KINDS,
    VIA,
    error_response,
    simple_response,
)
from .tracing import end_request_span, start_request_span
from .upstream import WRITE_HIGH

if TYPE_CHECKING:
    from .balancer import BackendState
    from .router import Route
    from .state import ProxyState
    from .upstream import UpstreamProtocol

# Connection phases (for timeouts): waiting for a request, reading a head, busy, relaying raw bytes.
IDLE, HEAD, BUSY, UPGRADE_WAIT, UPGRADED, CLOSED = range(6)
# Reasons to stop reading the client (bit mask).
P_UPSTREAM, P_PIPELINE, P_BUFFER, P_UPGRADE = 1, 2, 4, 8
#: Request body buffered while no upstream is attached yet; beyond it the client is paused.
BODY_BUFFER = 256 * 1024
HTML = b"text/html; charset=utf-8"
NO_SNI = object()
REQUEST_LINE_END_HOST = b" HTTP/1.1\r\nHost: "
NOT_CACHED = object()  # `Router.by_host` has no entry for the Host (its entries may be None)
#: One decrypted-read buffer per process, lent to the listener's TLS layer for each read (see
#: `TlsClientProtocol`); the bytes are copied out before anything else can read into it.
TLS_READ_SIZE = 256 * 1024
TLS_READ_BUFFER = memoryview(bytearray(TLS_READ_SIZE))


class LostTransport:
    """What a connection's `transport` is once the connection is lost: writes and closes do nothing,
    as they would on the closed transport, without holding that transport (see connection_lost)."""

    def write(self, data: Any) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass

    def is_closing(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


LOST = LostTransport()


class ClientProtocol(Downstream):
    """A client connection on the HTTP or HTTPS listener (an asyncio.Protocol by its methods)."""

    def __init__(self, st: "ProxyState", https: bool) -> None:
        self.st = st
        self.https = https
        self.xfp = b"X-Forwarded-Proto: https\r\n" if https else b"X-Forwarded-Proto: http\r\n"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.peer: tuple[str, int] = ("", 0)
        self.peer_ip = b""
        self.forwarded = self._forwarded_block()
        self.sni: object = NO_SNI
        self.parsing: Req | None = None
        self.active: Req | None = None
        self.pipeline: collections.deque[Req] | None = None
        self.upstream: UpstreamProtocol | None = None
        self.phase = IDLE
        self.t_phase = 0.0
        self.activity = False
        self.head_bytes = 0
        self.chunk_len = 0
        self.paused = 0
        self.write_paused = False
        self.resp_done = False
        self.upgrade_buf: list[bytes] | None = None
        self.eof = False
        self.lan = False  # a LAN peer: plain pages, no `.localhost`, no `lan = false` tunnels
        self.nin = 0  # bytes from the client / to the client since the last counted request
        self.nout = 0
        self.tracer = st.tracer  # request spans when the daemon traces (read once per connection)

    # -- connection lifecycle --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        st = self.st
        self.transport = transport  # type: ignore[assignment]
        st.connections_total += 1
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
            self.peer_ip = peer[0].encode("ascii")
            self.lan = not is_loopback_peer(peer[0])
            self.forwarded = self._forwarded_block()
        self.t_phase = monotonic()
        if len(st.conns) >= st.settings.max_connections or st.closing:
            st.rejected_total += 1
            self.phase = CLOSED
            transport.write(error_response(503, "too many connections"))  # type: ignore[attr-defined]
            transport.close()
            return
        st.conns.add(self)
        transport.set_write_buffer_limits(WRITE_HIGH)  # type: ignore[attr-defined]

    def _forwarded_block(self, xff: bytes | None = None) -> bytes:
        """X-Forwarded-For (`xff` from the client, then this peer), -Proto, and the name of
        X-Forwarded-Host, whose value follows: one part of the request head. Without `xff` the
        block is the same for every request of the connection, built once."""
        return b"X-Forwarded-For: " + (xff + b", " + self.peer_ip if xff else self.peer_ip) + CRLF \
            + self.xfp + b"X-Forwarded-Host: "

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        self.st.conns.discard(self)
        req = self.active
        if req is not None and req.route is not None:
            self._count(req, monotonic())  # cut off, or an upgraded connection that ended
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.client = None
            if not up.closed:
                up.transport.close()
        self.active = None
        self.pipeline = None
        # The parser holds this protocol for its callbacks, and a transport may keep bound methods
        # of it after the connection is gone (uvloop's TLS transport keeps `get_buffer` and
        # `buffer_updated`): dropping both here lets reference counting free the connection's
        # objects at once instead of leaving a cycle for the garbage collector.
        self.parser = None  # type: ignore[assignment]
        self.parsing = None
        self.transport = LOST  # type: ignore[assignment]

    def close(self) -> None:
        """Close after what was written (used by timeouts and shutdown)."""
        if self.phase != CLOSED:
            self.phase = CLOSED
            self.transport.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.upstream
        if up is not None and not up.closed:
            up.paused_by_client = True
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.upstream
        if up is not None and up.paused_by_client:
            up.paused_by_client = False
            if not up.closed:
                up.transport.resume_reading()

    def _pause(self, reason: int) -> None:
        if not self.paused and self.phase != CLOSED:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.phase != CLOSED:
                self.transport.resume_reading()

    def pause_for_upstream(self) -> None:
        self._pause(P_UPSTREAM)

    def resume_for_upstream(self) -> None:
        self._resume(P_UPSTREAM)

    # -- incoming bytes --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self.activity = True
        self.nin += len(data)
        phase = self.phase
        if phase == UPGRADED:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
            return
        if phase == UPGRADE_WAIT:
            self.upgrade_buf.append(data)  # type: ignore[union-attr]
            self._pause(P_UPGRADE)
            return
        if phase == CLOSED:
            return
        self.chunk_len = len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._parser_upgrade(data[exc.args[0]:])
            return
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.message)
            elif cause is not None:
                if self.st.log is not None:
                    self.st.log.error("builtin proxy bug", error=repr(cause))
                self._reject(500, "internal proxy error")
            else:
                self._reject(400, f"bad request: {exc}")
            return
        if self.phase == HEAD:
            self.head_bytes += len(data)
            if self.head_bytes > self.st.settings.max_header_size:
                self._reject(431, "request header fields too large")

    def eof_received(self) -> bool:
        """Client half-closed: answer what is in flight, then close (no further requests can come)."""
        self.eof = True
        if self.active is not None and self.phase in (HEAD, BUSY):
            return True
        return False

    def _reject(self, status: int, message: str) -> None:
        """Answer an error and close (the stream can no longer be trusted to be in step)."""
        if self.phase == CLOSED:
            return
        if self.upstream is None or not self.upstream.head_sent:
            self.transport.write(error_response(status, message))
        self.close()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.phase == CLOSED:
            raise _Reject(400, "connection closed")
        req = Req()
        self.parsing = req
        self.head_bytes = 0
        if self.active is None:
            self.active = req
            self.phase = HEAD
            self.t_phase = monotonic()
        else:
            if self.pipeline is None:
                self.pipeline = collections.deque()
            self.pipeline.append(req)
            self._pause(P_PIPELINE)

    def on_url(self, url: bytes) -> None:
        self.parsing.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsing.headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        req = self.parsing
        assert req is not None
        parser = self.parser
        if self.head_bytes + self.chunk_len > self.st.settings.max_header_size:
            size = len(req.url) + sum(len(n) + len(v) + 4 for n, v in req.headers)
            if size > self.st.settings.max_header_size:
                raise _Reject(431, "request header fields too large")
        req.method = parser.get_method()
        keep_alive = req.keep_alive = parser.should_keep_alive()
        req.upgrade = parser.should_upgrade()
        # llhttp accepts only HTTP/0.9, 1.0, 1.1 and 2.0, and of those only 1.1 stays alive without
        # a Connection header: that common case is decided without get_http_version(), which
        # formats a str (about 2,300 instructions, 4 % of a request).
        known_11 = keep_alive
        if keep_alive:
            for name, _ in req.headers:
                if len(name) == 10 and name.lower() == b"connection":
                    known_11 = False
                    break
        if not known_11:
            version = parser.get_http_version()
            if version != "1.1":
                if version != "1.0":
                    raise _Reject(400 if version < "1.0" else 505, f"unsupported HTTP version {version}")
                req.http11 = False
        req.is_head = req.method == b"HEAD"
        req.head_done = True
        if req is self.active:
            self.phase = BUSY
            self._dispatch(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req.discard:  # type: ignore[union-attr]
            return
        up = self.upstream
        if req is self.active and up is not None and up.req is req:  # type: ignore[union-attr]
            if req.chunked:  # type: ignore[union-attr]
                up.transport.writelines((b"%x\r\n" % len(body), body, CRLF))
            else:
                up.transport.write(body)
            return
        if req.body is None:  # type: ignore[union-attr]
            req.body = []  # type: ignore[union-attr]
        req.body.append(body)  # type: ignore[union-attr]
        req.body_size += len(body)  # type: ignore[union-attr]
        if req.body_size > BODY_BUFFER:  # type: ignore[union-attr]
            self._pause(P_BUFFER)

    def on_message_complete(self) -> None:
        req = self.parsing
        assert req is not None
        req.complete = True
        if req is not self.active:
            return
        if req.discard or req.local:
            if self.resp_done:
                self._finish_exchange()
            return
        up = self.upstream
        if up is not None and up.req is req:
            req.t_sent = monotonic()
            if req.chunked:
                up.transport.write(CHUNK_END)
        elif self.resp_done:
            self._finish_exchange()

    # -- routing and forwarding -------------------------------------------------------------
    def _dispatch(self, req: Req) -> None:
        """Route a request whose head is complete: answer it locally or start proxying it."""
        st = self.st
        st.requests_total += 1
        router = st.router
        host = te = conn = xff = upg = hop = None
        nhost = 0
        out: list[bytes] = []
        headers = req.headers
        if st.hook_on:
            host_hdr = None
            for name, value in headers:
                if name.lower() == b"host":
                    host_hdr = value
                    break
            route = router.lookup(host_hdr) if host_hdr is not None else None
            if route is not None and self._sni_ok(route) and not self._redirects(route) \
                    and self._visible(route, host_hdr):  # type: ignore[arg-type]  # route implies a Host
                if self._run_hook(req, route):
                    return
                headers = req.headers
        known = REQ_KINDS.known
        lengths = REQ_KINDS.lengths
        for name, value in headers:
            size = len(name)
            # inline KindCache.ordinary_by_length: most names skip the dict probe
            kind = known.get(name, -1) if size < 64 and (lengths >> size) & 1 else None
            if kind == -1:
                kind = REQ_KINDS.miss(name)
            if kind is None or kind == 6:
                out.append(name)
                out.append(b": ")
                out.append(value)
                out.append(CRLF)
            elif kind == 1:
                host = value
                nhost += 1
            elif kind == 3:
                te = value
            elif kind == 2:
                conn = value if conn is None else conn + b", " + value
            elif kind == 4:
                xff = value if xff is None else xff + b", " + value
            elif kind == 5:
                upg = value
            elif kind == 7:
                hop = value
        if te is not None:
            if te.strip().lower() != b"chunked":
                return self._reject(400, "unsupported transfer coding")
            req.chunked = True
        if nhost > 1:
            return self._reject(400, "more than one Host header")
        target = req.url
        if req.method == b"CONNECT":
            return self._reject(405, "CONNECT is not supported: gotunnel is a reverse proxy")
        if target[:1] != b"/":
            if target == b"*":
                if req.method != b"OPTIONS":
                    return self._reject(400, "only OPTIONS may ask for '*'")
                # A question about the server itself, answered by the proxy (as every engine does).
                return self._local(req, simple_response(200, b"", b"", close=not req.keep_alive,
                                                        http10_keep_alive=not req.http11))
            else:
                try:
                    parts = parse_url(target)
                except HttpParserError:
                    return self._reject(400, "bad request target")
                if parts.host:
                    host = parts.host + (b":%d" % parts.port if parts.port else b"")
                target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        if host is None:
            if req.http11:
                return self._reject(400, "missing Host header")
            host = b""
        by_host = router.by_host  # the lookup's cache, read without a Python call
        cached = by_host.get(host, NOT_CACHED)  # a sentinel, not a Route
        route = router.lookup(host) if cached is NOT_CACHED else cached  # type: ignore[assignment]
        if route is not None and self.https and not route.https:
            route = None  # a tunnel started with --no-https is not served on the HTTPS listener
        if route is not None and self.lan and not self._visible(route, host):  # loopback peers see all
            route = None
        if route is None:
            return self._page(req, 404, pages.table_not_found_page, host.decode("latin-1"), router.table)
        req.route = route
        req.t0 = self.t_phase  # set when the head began (on_message_begin / _finish_exchange)
        # Before the backend's path prefix is joined (gotunnel_core.dotsegments); the function
        # (a Python call) only when the target has something that could be a dot segment.
        if (target.find(b"/.") >= 0 or target.find(b"%2") >= 0) and has_dot_segment(target):
            return self._page(req, 400, None)
        if hop == router.hop_id:
            return self._page(req, 508, pages.loop_page, route.name)
        if self.https:
            if not self._sni_ok(route):
                return self._local(req, simple_response(
                    421, b"Misdirected Request: the TLS name does not match Host\n", close=True))
        elif route.redirect_https:
            return self._redirect(req, host, target)
        if (conn is not None and conn != b"keep-alive" and conn != b"close"
                and conn.lower() not in PLAIN_CONNECTION_TOKENS) or route.req_remove:
            named = set(route.req_remove)
            if conn is not None:
                named |= {t.strip().lower() for t in conn.split(b",")} - PLAIN_CONNECTION_TOKENS
            if named:
                out = [part for i in range(0, len(out), 4) if out[i].lower() not in named for part in out[i:i + 4]]
        if self.tracer is not None:
            start_request_span(st, req, route, out, self.https)
        # Request line and Host first: [method, " ", backend prefix, target, " HTTP/1.1\r\nHost: ", host,
        # CRLF, headers...]; `_attach` fills in the chosen backend's prefix (and host:port). Constant
        # neighbours are one part: `b"".join` takes a buffer of each.
        head = [req.method, b" ", b"", target, REQUEST_LINE_END_HOST, route.upstream_host or host, CRLF]
        head.extend(out)
        head.append(self._forwarded_block(xff) if xff else self.forwarded)
        head.append(host)
        add = route.req_add
        if add or req.upgrade or req.chunked or st.via:
            head.append(CRLF)
            if add:
                head.append(add)
            if req.upgrade:
                head.append(b"Connection: upgrade\r\nUpgrade: ")
                head.append(upg or b"")
                head.append(CRLF)
            if req.chunked:
                head.append(CHUNKED)
            if st.via:
                head.append(VIA)
            head.append(router.hop_line)
            head.append(CRLF)
        else:
            head.append(router.hop_end)  # CRLF, the loop marker's line, the blank line
        balancer = route.balancer
        backend = balancer.single  # one healthy backend (the usual tunnel): no Python call
        if backend is None or not backend.healthy or backend.ejected_until:
            backend = balancer.pick()
        if backend is None:
            return self._page(req, 503, pages.unavailable_page, route.name, [s.backend for s in route.balancer.states])
        req.head_parts = head
        self._send(req, backend)

    def _page(self, req: Req, status: int, detailed: "Callable[..., str] | None", *args: Any) -> None:
        """Answer one of the proxy's own pages: the detailed one (`detailed(*args)`, built only
        then) to a loopback peer, the plain one (naming nothing) to a LAN peer or when there is
        no detailed one. No closures: `_dispatch` is a cpdef method in the compiled build."""
        body = pages.plain_page(status) if self.lan or detailed is None else detailed(*args)
        self._local(req, simple_response(status, body.encode(), HTML, close=not req.keep_alive,
                                         head_only=req.is_head, http10_keep_alive=not req.http11))

    def _visible(self, route: "Route", host: bytes) -> bool:
        """`.localhost` names and `lan = false` tunnels answer loopback peers only (gotunnel_core.lan)."""
        return not self.lan or (route.tunnel.lan and not is_localhost_host(host.decode("latin-1")))

    def _sni_ok(self, route: "Route") -> bool:
        # 421 only when the handshake named another known tunnel; an SNI naming no tunnel
        # (an IP literal, a name under another suffix) got the default certificate anyway.
        sni = self.sni
        return sni is NO_SNI or sni == "" or sni == route.name

    def _redirects(self, route: "Route") -> bool:
        return not self.https and route.redirect_https

    def _redirect(self, req: Req, host: bytes, target: bytes) -> None:
        name = host
        if not name.startswith(b"["):
            head, sep, port = name.rpartition(b":")
            if sep and port.isdigit():
                name = head
        https_port = self.st.router.table.listen.https_port
        location = b"https://" + name + (b"" if https_port == 443 else b":%d" % https_port) + target
        code = req.route.tunnel.redirect_code if req.route is not None else 307
        self._local(req, simple_response(code, b"", b"", headers=[(b"Location", location)],
                                         close=not req.keep_alive, http10_keep_alive=not req.http11))

    def _run_hook(self, req: Req, route: "Route") -> bool:
        """Call `gotunnel_request`; True when a plugin answered (the answer was sent)."""
        out = run_request_hook(self.st, req.method, req.url, req.headers, route.name, self.peer,
                               "https" if self.https else "http")
        if out.failed:
            self._local(req, simple_response(500, b"request hook failed\n", close=not req.keep_alive,
                                             http10_keep_alive=not req.http11))
            return True
        if out.response is not None:
            hdrs, has_ct = out.answer_headers()
            self._local(req, simple_response(out.response.status, out.response.body,
                                             b"" if has_ct else b"text/plain; charset=utf-8",
                                             headers=hdrs, close=not req.keep_alive, head_only=req.is_head,
                                             http10_keep_alive=not req.http11))
            return True
        req.url = out.path
        req.headers = out.headers  # type: ignore[assignment]
        return False

    def _local(self, req: Req, response: bytes) -> None:
        """Send a response the proxy makes itself; the request body (if any) is discarded."""
        req.local = True
        req.discard = True
        req.body = None
        req.status = int(response[9:12])  # "HTTP/1.1 NNN": simple_response's status line
        self.nout += len(response)
        self._resume(P_BUFFER)
        self.transport.write(response)
        self.resp_done = True
        if req.complete:
            self._finish_exchange()

    def _send(self, req: Req, backend: "BackendState") -> None:
        req.backend = backend
        pool = backend.pool  # a C call to the pool (typed in the compiled build)
        up = pool.get()
        if up is not None:
            self._attach(req, up)
        else:
            self._spawn_connect(req, backend)

    def _spawn_connect(self, req: Req, backend: "BackendState") -> None:
        tasks = self.st.tasks
        task = self.st.loop.create_task(self._connect(req, backend))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _connect(self, req: Req, backend: "BackendState") -> None:
        try:
            up = await backend.pool.connect()
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "connection timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
            route = req.route
            assert route is not None
            route.balancer.connect_failed(backend, reason)
            self.st.upstream_errors += 1
            route.stats.upstream_errors += 1
            if req is not self.active or self.phase == CLOSED:
                return
            if req.tried is None:
                req.tried = []
            req.tried.append(backend)
            nxt = route.balancer.pick(req.tried)
            if nxt is not None:
                self._send(req, nxt)
                return
            self._bad_gateway(req, backend, reason)
            return
        if req is not self.active or self.phase == CLOSED:
            backend.pool.release(up)
            return
        if up.closed:  # accepted, then closed at once (a backend shutting down)
            self.st.upstream_errors += 1
            req.route.stats.upstream_errors += 1  # type: ignore[union-attr]
            self._bad_gateway(req, backend, "the backend closed the connection")
            return
        self._attach(req, up)

    def _bad_gateway(self, req: Req, backend: "BackendState", reason: str) -> None:
        self._page(req, 502, pages.bad_gateway_page, req.route.name if req.route else "?", backend.backend.url, reason)

    def _attach(self, req: Req, up: "UpstreamProtocol") -> None:
        """Bind `up` to the active request and write the head plus any buffered body."""
        self.upstream = up
        up.attach(self, req)
        if self.write_paused:
            up.paused_by_client = True
            up.transport.pause_reading()
        parts = req.head_parts
        backend = req.backend
        route = req.route
        assert backend is not None and route is not None
        if parts[3] != b"*":  # OPTIONS * takes no path prefix
            parts[2] = backend.prefix
        if route.host_from_backend:
            parts[5] = backend.host_header
        head = b"".join(parts)
        body = req.body
        if req.complete:
            req.t_sent = monotonic()
        if body is None:
            if req.complete and req.chunked:
                up.transport.writelines((head, CHUNK_END))
            else:
                up.transport.write(head)
            return
        parts = [head]
        if req.chunked:
            for chunk in body:
                parts += (b"%x\r\n" % len(chunk), chunk, CRLF)
            if req.complete:
                parts.append(CHUNK_END)
        else:
            parts += body
        req.body = None
        req.body_size = 0
        up.transport.writelines(parts)
        self._resume(P_BUFFER)

    # -- called by the upstream side ---------------------------------------------------------
    def response_done(self, up: "UpstreamProtocol", keep_alive: bool) -> None:
        """The upstream response was fully relayed."""
        if self.upstream is up:
            self.upstream = None
        if self.paused:
            self._resume(P_UPSTREAM)
        req = self.active
        if req is None or self.phase == CLOSED:
            return
        if not keep_alive:
            req.keep_alive = False
        self.resp_done = True
        if req.complete:
            self._finish_exchange()
        else:
            req.discard = True
            req.body = None
            self._resume(P_BUFFER)

    def upstream_lost(self, up: "UpstreamProtocol", exc: Exception | None) -> None:
        """The upstream closed before its response was complete."""
        if self.upstream is up:
            self.upstream = None
        self._resume(P_UPSTREAM)
        req = self.active
        if req is None or self.phase == CLOSED:
            return
        backend = req.backend
        if not up.got_bytes and up.reused and req.body_size == 0 and not req.chunked and backend is not None \
                and (req.complete and _no_body(req)):
            # A pooled connection the backend had closed: nothing was received, so retrying is safe.
            self._spawn_connect(req, backend)
            return
        self.upstream_failed(up, "the backend closed the connection" if exc is None else str(exc))

    def upstream_failed(self, up: "UpstreamProtocol", reason: str) -> None:
        """Invalid or cut-off response: 502 if nothing was sent yet, else cut the client off."""
        if self.upstream is up:
            self.upstream = None
        self._resume(P_UPSTREAM)
        self.st.upstream_errors += 1
        req = self.active
        if req is not None and req.route is not None:
            req.route.stats.upstream_errors += 1
        if req is None or self.phase == CLOSED:
            return
        if up.head_sent:
            self.phase = CLOSED
            self.transport.abort()
            return
        req.keep_alive = False
        if req.backend is not None:
            self._bad_gateway(req, req.backend, reason)
        else:
            self.close()

    def start_relay(self, up: "UpstreamProtocol", rest: bytes) -> None:
        """The backend accepted the upgrade (101): relay raw bytes both ways from now on."""
        self.phase = UPGRADED
        self.upstream = up
        buf = self.upgrade_buf
        self.upgrade_buf = None
        if buf:
            up.transport.writelines(buf)
        if rest:
            self.transport.write(rest)
        self._resume(P_UPGRADE)

    def relay_closed(self) -> None:
        self.upstream = None
        self.close()

    def _parser_upgrade(self, rest: bytes) -> None:
        """The request asked for an upgrade: hold further bytes until the backend answers."""
        req = self.active
        if req is None or not req.upgrade or self.pipeline:
            self._reject(400, "unexpected protocol upgrade")
            return
        if self.phase == CLOSED or req.local:
            self.close()
            return
        self.phase = UPGRADE_WAIT
        self.upgrade_buf = [rest] if rest else []

    def _count(self, req: Req, now: float) -> None:
        """Count `req` (routed, now finished or cut off) for its tunnel, with the bytes since the
        last counted request of this connection; close its trace span."""
        route = req.route
        assert route is not None
        counters: RouteCounters = route.stats
        counters.count(req.status, now - req.t0, self.nin, self.nout)
        self.nin = 0
        self.nout = 0
        if req.span is not None:
            end_request_span(req)

    def _finish_exchange(self) -> None:
        req = self.active
        self.active = None
        self.resp_done = False
        now = monotonic()  # the request's end, and the start of the connection's next phase
        if req is not None and req.route is not None:
            self._count(req, now)
        if req is None or not req.keep_alive or self.st.closing or self.eof or self.phase in (CLOSED, UPGRADE_WAIT):
            self.close()
            return
        pipeline = self.pipeline
        if pipeline:
            nxt = pipeline.popleft()
            if not pipeline:
                self._resume(P_PIPELINE)
            self.active = nxt
            self.t_phase = now
            if nxt.head_done:
                self.phase = BUSY
                self._dispatch(nxt)
            else:
                self.phase = HEAD
            return
        self.phase = IDLE
        self.t_phase = now
        if self.paused:
            self._resume(P_PIPELINE)

    # -- timeouts ------------------------------------------------------------------------------
    def check_timeouts(self, now: float, header_timeout: float, idle_timeout: float) -> None:
        """Called by the engine's sweeper about once a second."""
        phase = self.phase
        if phase == HEAD:
            if now - self.t_phase > header_timeout:
                self._reject(408, "request head not received in time")
        elif phase == IDLE:
            if now - self.t_phase > idle_timeout:
                self.close()
        elif phase == BUSY or phase == UPGRADE_WAIT:
            up = self.upstream
            req = self.active
            if up is not None and req is not None and req.t_sent and not up.got_bytes and req.route is not None \
                    and now - req.t_sent > req.route.upstream_timeout:
                self._upstream_timeout(req, up)
                return
            if self.activity or (up is not None and up.activity):
                self.activity = False
                if up is not None:
                    up.activity = False
                self.t_phase = now
            elif now - self.t_phase > idle_timeout:
                req = self.active
                if up is None or not up.head_sent:
                    if req is not None and not req.complete:
                        self.transport.write(error_response(408, "request body not received in time"))
                    else:
                        self.transport.write(error_response(504, "backend did not answer in time"))
                self.close()

    def _upstream_timeout(self, req: Req, up: "UpstreamProtocol") -> None:
        """The backend took the request but sent nothing within its tunnel's upstream timeout: 504."""
        route = req.route
        assert route is not None
        self.upstream = None
        up.client = None
        up.transport.close()
        self.st.upstream_errors += 1
        route.stats.upstream_errors += 1
        req.keep_alive = False
        backend = req.backend.backend.url if req.backend is not None else "?"
        self._page(req, 504, pages.gateway_timeout_page, route.name, backend, route.upstream_timeout)


class TlsClientProtocol(ClientProtocol):
    """A client connection on the HTTPS listener: the same protocol, read through a buffer.

    The TLS layer (tls_transport.TlsConnection) decrypts into the buffer `get_buffer` returns
    (`SSLObject.read(n, buffer)`), one buffer for all connections: it calls `buffer_updated`
    right after filling it, and the bytes are copied out first. (uvloop's own TLS transport,
    which the listener used before, read into a new 256 KiB bytes object per read without it.)
    """

    def __init__(self, st: "ProxyState") -> None:
        ClientProtocol.__init__(self, st, True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        """Take the tunnel the handshake named (SNI); with HTTP/2 on and chosen by ALPN, hand the
        connection to the HTTP/2 protocol instead. The listener makes this protocol directly, so
        an HTTP/1.1 connection pays no dispatching object or `set_protocol`."""
        st = self.st
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            if st.h2_accept is not None and sslobj.selected_alpn_protocol() == "h2":
                self.phase = CLOSED
                self.parser = None  # type: ignore[assignment]  # never used: no reference cycle left
                st.h2_accept(st, transport, sslobj)
                return
            self.sni = getattr(sslobj, "gotunnel_sni", NO_SNI)
        ClientProtocol.connection_made(self, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return TLS_READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(TLS_READ_BUFFER[:nbytes].tobytes())


class _Reject(Exception):
    """Raised inside a parser callback to answer an error status and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_body(req: Req) -> bool:
    for name, _ in req.headers:
        if name.lower() == b"content-length":
            return False
    return True
