"""Misbehaving backends: invalid responses, cut-off bodies, stale pooled connections, early answers."""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Callable

import pytest

from builtin_helpers import LOCAL, engine_factory, free_port, http_get, make_table, ports, raw_exchange  # noqa: F401


class ScriptedBackend:
    """A raw TCP backend: each accepted connection is handed to `script(conn, index)` on a thread."""

    def __init__(self, script: Callable[[socket.socket, int], None]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCAL, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.accepted = 0
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            index = self.accepted
            self.accepted += 1
            t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, index: int) -> None:
        try:
            self.script(conn, index)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a script thread blocked in recv
            except OSError:
                pass
            conn.close()
        for t in self.threads:
            t.join(5)


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


@pytest.fixture
def scripted():
    made: list[ScriptedBackend] = []

    def make(script):
        backend = ScriptedBackend(script)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()


def _engine(engine_factory, ports, url):
    eng = engine_factory({"idle_timeout": 5.0})
    eng.start(make_table([{"name": "app", "backends": url}], *ports))
    return eng


def test_invalid_response_gives_502(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    status, _, body = http_get(ports[0], "app.localhost")
    assert status == 502 and backend.url in body.decode()


def test_garbage_response_gives_502(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    assert http_get(ports[0], "app.localhost")[0] == 502


def test_backend_closing_without_answer_gives_502(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.close()

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    status, _, body = http_get(ports[0], "app.localhost")
    assert status == 502 and "closed the connection" in body.decode()


def test_body_cut_short_by_backend_aborts_the_client_connection(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly thirty bytes of a hundred")
        conn.close()

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    conn = http.client.HTTPConnection(LOCAL, ports[0], timeout=5)
    conn.request("GET", "/", headers={"Host": "app.localhost"})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()


def test_close_delimited_response_is_rechunked_for_http11(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        conn.sendall(b"second part")
        conn.close()

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    reply = raw_exchange(ports[0], b"GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\n\r\n")
    status, _, plain = http_get(ports[0], "app.localhost")
    assert status == 200 and plain == b"first part, second part"


def test_stale_pooled_connection_is_retried_on_a_fresh_one(engine_factory, ports, scripted):
    """The backend closes a kept-alive connection right when the proxy reuses it: the GET is retried."""
    gate = threading.Event()

    def script(conn, index):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%02d" % index)
        if index == 0:
            # Keep-alive promised, then the next request on this connection is dropped unanswered.
            gate.set()
            read_head(conn)
            conn.close()
            return
        while read_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%02d" % index)

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    conn = http.client.HTTPConnection(LOCAL, ports[0], timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "app.localhost"})
        assert conn.getresponse().read() == b"00"
        assert gate.wait(5)
        conn.request("GET", "/", headers={"Host": "app.localhost"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"01"
    finally:
        conn.close()


def test_early_response_before_request_body_keeps_the_client_in_step(engine_factory, ports, scripted):
    """A backend answers 413 without reading an upload (and without closing): the proxy discards the
    rest of the body, never reuses that upstream connection, and serves the next request."""
    def script(conn, index):
        while True:
            head = read_head(conn)
            if not head:
                return
            if b"/upload" in head:
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                continue  # the unread body would be parsed as the next request if the proxy reused us
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(index)), index))

    backend = scripted(script)
    _engine(engine_factory, ports, backend.url)
    with socket.create_connection((LOCAL, ports[0]), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 200000\r\n\r\n" + b"x" * 1000)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413 ")
        s.sendall(b"y" * 199000)  # the rest of the body is read and discarded by the proxy
        s.sendall(b"GET /next HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n1"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert backend.accepted == 2


def test_silent_backend_gets_504_after_the_idle_timeout(engine_factory, ports, scripted):
    def script(conn, _):
        read_head(conn)
        conn.recv(1)  # never answers; returns when the proxy gives up and closes

    backend = scripted(script)
    eng = engine_factory({"idle_timeout": 0.5})
    eng.start(make_table([{"name": "app", "backends": backend.url}], *ports))
    reply = raw_exchange(ports[0], b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n", timeout=5)
    assert reply.startswith(b"HTTP/1.1 504 ")
