"""Builtin engine memory (issue 19, item 10): a closed connection is freed at once by reference
counting, not left to the cyclic garbage collector.

The request parser holds its protocol (its callbacks), so a protocol that kept its parser after
the connection closed lived on until a full collection, and with it the transport and, for TLS,
some 260 KB of buffers per connection: under HTTPS load the daemon's heap grew by tens of MiB
between collections and stayed fragmented. The soak scenario (`make soak`, benchmarks/soak.py)
measures the effect on RSS; this test pins the cause.
"""

from __future__ import annotations

import gc
import socket
import ssl
from typing import Any

import pytest

import psutil

from builtin_helpers import LOCAL, backend_a, engine_factory, make_pki, make_table, ports, wait_for  # noqa: F401
from gotunnel_core.testing.backends import Relay
from gotunnel_core.testing.daemon import http_get
from gotunnel_core.testing.runner import Gotunnel, free_port


#: A connection's objects: the HTTP protocols, and for TLS the TLS layer, its SSL object and BIOs.
CONNECTION_TYPES = ("ClientProtocol", "TlsClientProtocol", "UpstreamProtocol", "TlsConnection", "SSLObject", "MemoryBIO")


def protocols_alive() -> list[str]:
    """Connection objects still in memory (gc.get_objects also sees unreachable cycles)."""
    return [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in CONNECTION_TYPES]


def _request_and_cut(port: int, host: str, ctx: ssl.SSLContext | None) -> None:
    """One keep-alive request, its answer read, then the connection dropped without a goodbye
    (as wrk does at the end of a run)."""
    raw = socket.create_connection((LOCAL, port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=host) if ctx else raw
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    sock.close()


def _request_and_close(port: int, host: str, ctx: ssl.SSLContext | None) -> None:
    """One `Connection: close` request read to the server's close, then a clean close (TLS:
    close_notify both ways), as browsers and wrk's handshake-per-request scenario do."""
    raw = socket.create_connection((LOCAL, port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=host) if ctx else raw
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    if isinstance(sock, ssl.SSLSocket):
        sock = sock.unwrap()
    sock.close()


@pytest.mark.parametrize("https,close", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["http-cut", "https-cut", "http-close", "https-close"])
def test_closed_connections_are_freed_without_the_garbage_collector(engine_factory: Any, backend_a: Any,
                                                                   ports: tuple[int, int], tmp_path: Any,
                                                                   https: bool, close: bool) -> None:
    """Cut (RST) or closed cleanly by the server after `Connection: close`: either way nothing of
    the connection is left for the collector (a transport that keeps bound methods of its
    protocol after the connection is lost, as uvloop's TLS transport does, made a cycle of a
    dozen objects per connection with a protocol that kept its transport)."""
    pki = make_pki(tmp_path / "pki", ["alpha"])
    eng = engine_factory({"upstream_idle_timeout": 0.2})
    eng.start(make_table([{"name": "alpha", "backends": [backend_a.url]}], *ports, pki))
    ctx = pki.client_context() if https else None
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            (_request_and_close if close else _request_and_cut)(ports[1] if https else ports[0], "alpha.localhost", ctx)
        wait_for(lambda: eng.in_loop(lambda: not eng.engine.st.conns), what="every client connection to close")
        wait_for(lambda: eng.in_loop(lambda: not any(p.idle for p in eng.engine._pools.values())), timeout=10,
                 what="idle upstream connections to be swept")
        alive = protocols_alive()
        assert not alive, f"closed but not freed (the garbage collector is off): {alive}"
    finally:
        gc.enable()


# ----- item 2, builtin: a loop no longer eats memory and sockets ------------------------------------------------

def test_builtin_loop_through_a_relay_stays_bounded(gotunnel: Gotunnel) -> None:
    gotunnel("start", "-d", "seed", "-p", str(free_port()), check=True)
    daemon = psutil.Process(gotunnel.daemon_pid())
    relay = Relay(gotunnel.http_port)
    try:
        gotunnel("start", "-d", "loop", "-p", str(relay.port), check=True)
        before = daemon.memory_info().rss
        statuses = {http_get(gotunnel.http_port, "loop.localhost", f"/{i}")[0] for i in range(200)}
        assert statuses == {508}
        grown = (daemon.memory_info().rss - before) / 2**20
        assert grown < 30, f"RSS grew {grown:.0f} MiB over 200 looped requests"
        assert relay.connections <= 200  # one relay hop per request, not a cascade
        wait_for(lambda: len(daemon.net_connections("tcp")) < 50, timeout=15, what="sockets to be released")
    finally:
        relay.close()


# ----- per-connection allocations on the HTTPS listener ---------------------------------------------------------

def _handshake(client: ssl.SSLObject, server: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO,
               s_in: ssl.MemoryBIO, s_out: ssl.MemoryBIO) -> None:
    """Drive both ends of a TLS handshake over memory BIOs until both have finished."""
    done: set[str] = set()
    for _ in range(10):
        for name, obj, src, dst in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            try:
                obj.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
            dst.write(src.read())
        if len(done) == 2:
            return
    raise AssertionError(f"the TLS handshake over memory BIOs did not finish (done: {done})")


class MemoryTlsClient:
    """A TLS client over memory BIOs on a raw socket: the test decides how its bytes are cut into
    TCP segments."""

    def __init__(self, raw: socket.socket, ctx: ssl.SSLContext, host: str) -> None:
        self.raw, self.c_in, self.c_out = raw, ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.c_in, self.c_out, server_hostname=host)
        self.plain = b""

    def send(self, one_byte_per_segment: bool = False) -> None:
        data = self.c_out.read()
        if one_byte_per_segment:
            for i in range(len(data)):
                self.raw.sendall(data[i:i + 1])
        elif data:
            self.raw.sendall(data)

    def _more(self) -> bool:
        data = self.raw.recv(65536)
        self.c_in.write(data) if data else self.c_in.write_eof()
        return bool(data)

    def handshake(self, one_byte_per_segment: bool) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.send(one_byte_per_segment)
                assert self._more(), "the engine closed during the handshake"
        self.send(one_byte_per_segment)  # the client's Finished

    def response(self) -> bytes:
        """One response framed by Content-Length; raises EOFError at close_notify."""
        while True:
            head, sep, rest = self.plain.partition(b"\r\n\r\n")
            if sep:
                length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                if len(rest) >= length:
                    self.plain = rest[length:]
                    return head + sep + rest[:length]
            try:
                data = self.obj.read(65536)
                if not data:
                    raise EOFError("close_notify")  # what SSLObject.read returns at the peer's
                self.plain += data
            except ssl.SSLWantReadError:
                assert self._more(), "the engine closed before the response ended"


def test_https_listener_reads_split_and_batched_records_and_closes_without_waiting(
        engine_factory: Any, backend_a: Any, ports: tuple[int, int], tmp_path: Any) -> None:
    """The listener's TLS layer (tls_transport.TlsConnection) reads only when bytes have come: a
    handshake and a request sent one byte per TCP segment (records arrive in pieces), then three
    requests in one segment (three records in one read), are all answered in order. After the
    `Connection: close` response come its close_notify and the TCP close, without the engine
    waiting for the client's close_notify (which this client never sends), as nginx closes."""
    pki = make_pki(tmp_path / "pki", ["alpha"])
    eng = engine_factory({})
    eng.start(make_table([{"name": "alpha", "backends": [backend_a.url]}], *ports, pki))
    with socket.create_connection((LOCAL, ports[1]), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = MemoryTlsClient(raw, pki.client_context(), "alpha.localhost")
        client.handshake(one_byte_per_segment=True)
        client.obj.write(b"GET /split HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n")
        client.send(one_byte_per_segment=True)
        answer = client.response()
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"path": "/split"' in answer
        for i in range(3):
            close = b"Connection: close\r\n" if i == 2 else b""
            client.obj.write(b"GET /batch-%d HTTP/1.1\r\nHost: alpha.localhost\r\n%s\r\n" % (i, close))
        client.send()  # three records, one segment
        for i in range(3):
            answer = client.response()
            assert answer.startswith(b"HTTP/1.1 200 ") and b'"path": "/batch-%d"' % i in answer, answer[:300]
        with pytest.raises(EOFError):  # the engine's close_notify
            client.response()
        assert raw.recv(65536) == b"", "the engine did not close TCP after its close_notify"
    wait_for(lambda: eng.in_loop(lambda: not eng.engine.st.conns), what="every client connection to close")


def test_https_close_after_a_response_ends_with_close_notify(engine_factory: Any, backend_a: Any,
                                                            ports: tuple[int, int], tmp_path: Any) -> None:
    """`Connection: close` over HTTPS: the whole response, then the engine's close_notify (uvloop's
    shutdown reads go through the listener's SSL objects), then the connection is gone."""
    pki = make_pki(tmp_path / "pki", ["alpha"])
    eng = engine_factory({})
    eng.start(make_table([{"name": "alpha", "backends": [backend_a.url]}], *ports, pki))
    for _ in range(3):
        with socket.create_connection((LOCAL, ports[1]), timeout=10) as raw:
            # without ragged EOFs suppressed, a TCP close with no close_notify raises SSLEOFError
            sock = pki.client_context().wrap_socket(raw, server_hostname="alpha.localhost", suppress_ragged_eofs=False)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: alpha.localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):  # b"" at the engine's close_notify
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n" in data
            sock.unwrap()  # our close_notify back: the engine finishes its shutdown
    wait_for(lambda: eng.in_loop(lambda: not eng.engine.st.conns), what="every client connection to close")
