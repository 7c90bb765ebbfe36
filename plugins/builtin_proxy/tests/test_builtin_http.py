"""HTTP/1.x correctness of the builtin engine: smuggling defences, limits, framing, pooling rules."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, backend_a, backend_b, echo_json, engine_factory, http_get, make_table, pki, ports, raw_exchange, wait_for,
)


@pytest.fixture
def proxy(engine_factory, backend_a, ports):
    eng = engine_factory({"header_timeout": 1.0, "max_header_size": 8192})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    return ports[0]


H = b"Host: alpha.localhost\r\n"
SMUGGLING = {
    "content-length and transfer-encoding":
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate content-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "identical duplicate content-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "content-length list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    "negative content-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "unknown transfer coding": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "coding before chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "chunked not last": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "xchunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n",
    "bare LF in request line": b"GET / HTTP/1.1\n" + H + b"\r\n",
    "bare LF after header": b"GET / HTTP/1.1\r\nHost: alpha.localhost\nX-A: b\r\n\r\n",
    "bare LF only": b"GET / HTTP/1.1\nHost: alpha.localhost\n\n",
    "invalid chunk size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bare LF after chunk size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "header name with space": b"GET / HTTP/1.1\r\n" + H + b"X Y: b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + H + b"X-Y : b\r\n\r\n",
    "CR inside value": b"GET / HTTP/1.1\r\n" + H + b"X-Y: a\rb\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\n" + H + b"X-Y: a\x00b\r\n\r\n",
    "two Host headers": b"GET / HTTP/1.1\r\n" + H + b"Host: evil.localhost\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
}


@pytest.mark.parametrize("vector", list(SMUGGLING), ids=list(SMUGGLING))
def test_smuggling_vectors_get_400_and_close(proxy, backend_a, vector):
    # A valid request follows on the same connection: it must never reach the backend.
    data = SMUGGLING[vector] + b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"
    reply = raw_exchange(proxy, data)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1  # and then the connection was closed
    assert b"connection: close" in reply.lower()
    assert all(r["path"] != "/smuggled" for r in backend_a.requests)


def test_http_version_is_read_right_whether_or_not_a_connection_header_is_there(proxy, backend_a):
    """The version is taken from llhttp only when keep-alive alone cannot tell (protocol.py):
    HTTP/1.0 kept alive by its header stays 1.0, HTTP/2.0 and 0.9 request lines are refused."""
    ka = b"Connection: keep-alive\r\n"
    reply = raw_exchange(proxy, b"GET /ten HTTP/1.0\r\n" + H + ka + b"\r\n", timeout=2.0, until_close=False)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200 ") and b"connection: keep-alive" in head, reply[:300]
    assert b"transfer-encoding" not in head  # a 1.0 client never gets chunked framing
    assert raw_exchange(proxy, b"GET / HTTP/2.0\r\n" + H + ka + b"\r\n").startswith(b"HTTP/1.1 505 ")
    assert raw_exchange(proxy, b"GET / HTTP/0.9\r\n" + H + ka + b"\r\n").startswith(b"HTTP/1.1 400 ")
    reply = raw_exchange(proxy, b"GET /eleven HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"connection: close" in reply.lower()
    assert [r["path"] for r in backend_a.requests if r["path"] in ("/ten", "/eleven")] == ["/ten", "/eleven"]


def test_missing_host_on_http11_is_400_and_http10_without_host_is_404(proxy):
    assert raw_exchange(proxy, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(proxy, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404 ")


def test_oversized_head_gets_431(proxy):
    big = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert raw_exchange(proxy, big).startswith(b"HTTP/1.1 431 ")
    # also when it trickles in pieces that each look harmless
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + H)
        for _ in range(20):
            try:
                s.sendall(b"X-Many: " + b"b" * 500 + b"\r\n")
            except OSError:
                break
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_slowloris_cut_off_by_absolute_head_deadline(proxy):
    """One byte every 0.2 s resets any idle timer; the 1 s head deadline must still fire."""
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Slow: " + b"s" * 200
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        start = time.monotonic()
        closed_after = None
        for byte in head:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - start
                break
            s.settimeout(0.2)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            assert data.startswith(b"HTTP/1.1 408 ") or data == b""
            closed_after = time.monotonic() - start
            break
    assert closed_after is not None, "slow client was never cut off"
    assert 0.9 <= closed_after < 3.0, closed_after


def _read_until_closed(s: socket.socket) -> tuple[bytes, float]:
    """Everything the engine sends until it closes (FIN or RST), and how long that took."""
    start, data = time.monotonic(), b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00"], ids=["nothing", "half-a-client-hello"])
def test_stalled_tls_handshake_cut_off_by_the_header_timeout(engine_factory, backend_a, ports, pki, sent):
    """The HTTPS listener's TLS layer (tls_transport) gives a handshake `header_timeout`, as it
    gives a request head: a client that connects and stalls is closed, with nothing answered."""
    eng = engine_factory({"header_timeout": 1.0})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    with socket.create_connection((LOCAL, ports[1]), timeout=5) as s:
        if sent:
            s.sendall(sent)
        data, took = _read_until_closed(s)
    assert data == b"" and 0.9 <= took < 3.0, (data[:50], took)


def test_plain_http_on_the_https_port_is_refused_at_once(engine_factory, backend_a, ports, pki):
    """A failed handshake ends the connection (a TLS alert at most), long before the timeout."""
    eng = engine_factory({"header_timeout": 10.0})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    with socket.create_connection((LOCAL, ports[1]), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        data, took = _read_until_closed(s)
    assert not data.startswith(b"HTTP/") and took < 2.0, (data[:50], took)


def test_idle_keep_alive_connection_closed_after_idle_timeout(engine_factory, backend_a, ports):
    eng = engine_factory({"idle_timeout": 0.5})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    with socket.create_connection((LOCAL, ports[0]), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        first = s.recv(65536)
        while not first.endswith(b"}"):
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        assert s.recv(65536) == b""  # closed by the proxy, not by our 5 s timeout
        assert time.monotonic() - start < 3


def test_max_connections_refuses_extra_clients(engine_factory, backend_a, ports):
    eng = engine_factory({"max_connections": 2})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    held = [socket.create_connection((LOCAL, ports[0]), timeout=5) for _ in range(2)]
    try:
        wait_for(lambda: eng.in_loop(lambda: len(eng.engine.st.conns)) == 2, what="two connections")
        reply = raw_exchange(ports[0], b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 503 ")
    finally:
        for s in held:
            s.close()
    wait_for(lambda: http_get(ports[0], "alpha.localhost")[0] == 200, what="capacity back")


def test_head_204_304_on_pooled_connection_keep_the_stream_in_step(proxy, backend_a):
    conn = http.client.HTTPConnection(LOCAL, proxy, timeout=10)
    try:
        ports_seen = set()
        for method, path, status in [("HEAD", "/head", 200), ("GET", "/status/204", 204), ("GET", "/status/304", 304),
                                     ("HEAD", "/again", 200), ("GET", "/after", 200)]:
            conn.request(method, path, headers={"Host": "alpha.localhost"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == status, path
            if method == "HEAD":
                assert body == b"" and int(resp.getheader("Content-Length")) > 0
            if path == "/after":
                info = echo_json(body)
                assert info["path"] == "/after"
                ports_seen.add(info["peer_port"])
        assert [r["path"] for r in backend_a.requests] == ["/head", "/status/204", "/status/304", "/again", "/after"]
        assert len({r["peer"][1] for r in backend_a.requests}) == 1  # all on one pooled upstream connection
    finally:
        conn.close()


def test_upstream_connection_not_reused_after_connection_close(proxy, backend_a):
    conn = http.client.HTTPConnection(LOCAL, proxy, timeout=10)
    try:
        conn.request("GET", "/close", headers={"Host": "alpha.localhost"})
        first = json.loads(conn.getresponse().read())["peer_port"]
        conn.request("GET", "/x", headers={"Host": "alpha.localhost"})
        second = echo_json(conn.getresponse().read())["peer_port"]
        assert first != second
    finally:
        conn.close()


def test_http10_client(proxy):
    reply = raw_exchange(proxy, b"GET /ten HTTP/1.0\r\nHost: alpha.localhost\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    assert echo_json(body)["path"] == "/ten"
    # HTTP/1.0 keep-alive: two requests on one connection
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        for i in range(2):
            s.sendall(b"GET /k%d HTTP/1.0\r\nHost: alpha.localhost\r\nConnection: keep-alive\r\n\r\n" % i)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"connection: keep-alive" in head.lower()
            length = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(body) < length:
                body += s.recv(65536)
            assert echo_json(body)["path"] == "/k%d" % i


def test_pipelined_requests_answered_in_order(proxy):
    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n" % i for i in range(3))
    data += b"GET /last HTTP/1.1\r\nHost: alpha.localhost\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(proxy, data)
    paths = [json.loads(part[part.index(b"{"):part.rindex(b"}") + 1])["path"]
             for part in reply.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == ["/p0", "/p1", "/p2", "/last"]


def test_chunked_request_body_is_rechunked(proxy):
    data = (b"POST /c HTTP/1.1\r\nHost: alpha.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    reply = raw_exchange(proxy, data)
    body = reply.partition(b"\r\n\r\n")[2]
    info = echo_json(body)
    assert info["body"] == "hello world"
    assert info["hdr"]["transfer-encoding"] == "chunked"


def test_via_header_when_enabled(engine_factory, backend_a, ports):
    eng = engine_factory({"via": True})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    status, headers, body = http_get(ports[0], "alpha.localhost")
    assert headers["via"] == "1.1 gotunnel" and echo_json(body)["hdr"]["via"] == "1.1 gotunnel"


def test_settings_are_validated(engine_factory, backend_a, ports):
    from gotunnel_core.errors import ValidationError

    eng = engine_factory({"header_timeout": -1})
    with pytest.raises(ValidationError):
        eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))


def test_expect_100_continue_is_relayed(proxy):
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"hello")
        data = interim.partition(b"\r\n\r\n")[2]
        while not data.endswith(b"}"):
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and echo_json(body)["body"] == "hello"


def test_client_leaving_mid_response_does_not_pool_the_upstream(proxy, backend_a):
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        s.sendall(b"GET /download/%d HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n" % (64 * 2**20))
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    status, _, body = http_get(proxy, "alpha.localhost", "/next")
    assert status == 200 and echo_json(body)["path"] == "/next"
    peers = [r["peer"][1] for r in backend_a.requests]
    assert peers[0] != peers[1]


def test_stalled_request_body_hits_the_idle_timeout(engine_factory, backend_a, ports):
    eng = engine_factory({"idle_timeout": 0.5})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    with socket.create_connection((LOCAL, ports[0]), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 100\r\n\r\nonly part")
        start = time.monotonic()
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - start < 3


def test_stop_lets_in_flight_requests_finish_and_refuses_new_ones(engine_factory, backend_a, ports):
    import threading

    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    idle = socket.create_connection((LOCAL, ports[0]), timeout=5)
    with socket.create_connection((LOCAL, ports[0]), timeout=10) as s:
        s.sendall(b"GET /sse HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n")
        data = b""
        while b"data: first" not in data:
            data += s.recv(65536)
        stopper = threading.Thread(target=lambda: eng.call(eng.engine.stop()))
        stopper.start()
        try:
            wait_for(lambda: _refused(ports[0]), what="listener closed")
            assert idle.recv(100) == b""  # idle keep-alive connections are closed at once
            backend_a.sse_release.set()
            while not data.endswith(b"0\r\n\r\n"):
                chunk = s.recv(65536)
                assert chunk, "in-flight response was cut"
                data += chunk
            assert b"data: last" in data
        finally:
            stopper.join(15)
            idle.close()
    assert eng.engine.health().running is False


def _refused(port: int) -> bool:
    try:
        socket.create_connection((LOCAL, port), timeout=1).close()
    except OSError:
        return True
    return False


def test_head_limit_counts_only_the_head(engine_factory, backend_a, ports):
    eng = engine_factory({"max_header_size": 65536})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    # a 60 KB header is within the limit
    status, _, body = http_get(ports[0], "alpha.localhost", headers={"X-Big": "a" * 60000})
    assert status == 200 and len(echo_json(body)["hdr"]["x-big"]) == 60000
    # a small head followed by a large body in the same write is not mistaken for a large head
    payload = b"b" * 300_000
    data = (b"POST /upload HTTP/1.1\r\nHost: alpha.localhost\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)) + payload
    reply = raw_exchange(ports[0], data)
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"received": 300000' in reply


def test_client_half_close_still_gets_the_response(proxy):
    with socket.create_connection((LOCAL, proxy), timeout=5) as s:
        s.sendall(b"GET /half HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and echo_json(body)["path"] == "/half"
