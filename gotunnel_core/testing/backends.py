"""Backends and clients for tests: real servers on 127.0.0.1 on free ports, each with a `close`.

- `EchoBackend` (`start_echo_backend`): a JSON echo of method, path, headers and body, counting hits.
- `AppServer`: JSON echo of what arrived (`/...`), a server-sent-events stream (`/sse`), an
  upload sink that hashes a streamed body (`/upload`) and a download source (`/download/N`).
- `WsEchoServer`: a websocket echo server (the `websockets` library) on its own thread.
- `Client`: one keep-alive client connection to a tunnel by address, with the tunnel's Host and
  (for HTTPS) SNI, trusting only gotunnel's CA.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Protocol, TypeVar

LOCAL = "127.0.0.1"
CHUNK = 1 << 16


def pattern(n: int) -> Iterator[bytes]:
    """`n` bytes of a fixed pattern, in chunks (what /download sends and uploads send)."""
    block = bytes(range(256)) * (CHUNK // 256)
    while n > 0:
        part = block[: min(n, CHUNK)]
        n -= len(part)
        yield part


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    for part in pattern(n):
        digest.update(part)
    return digest.hexdigest()


class JsonEchoHandler(BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of what arrived: method, path, headers, body."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps({
            "backend": self.server.name,  # type: ignore[attr-defined]
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "client_port": self.client_address[1],
        }).encode()
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class EchoBackend:
    """A running `JsonEchoHandler` server (what the `echo_backend` fixture makes)."""

    name: str
    port: int
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> list[str]:
        hits: list[str] = self.server.hits  # type: ignore[attr-defined]
        return hits

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def closing_factory(start: Callable[[str], C], default: str) -> Iterator[Callable[..., C]]:
    """For a fixture: yield a factory of servers (`start(name)`), then close every one it made."""
    made: list[C] = []

    def make(name: str = default) -> C:
        server = start(name)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def start_echo_backend(name: str = "backend") -> EchoBackend:
    """An `EchoBackend` on a free port, serving on a daemon thread until `close()`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), JsonEchoHandler)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return EchoBackend(name, server.server_address[1], server, thread)


class AppHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "AppServer"

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Head and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.request)

    def _read_body(self, on_chunk: Any = None) -> bytes:
        """Read the whole body (Content-Length or chunked), handing each piece to `on_chunk`."""
        data = bytearray()

        def take(piece: bytes) -> None:
            if on_chunk is not None:
                on_chunk(piece)
            else:
                data.extend(piece)

        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                while size:
                    piece = self.rfile.read(min(size, CHUNK))
                    size -= len(piece)
                    take(piece)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, CHUNK))
                if not piece:
                    break
                left -= len(piece)
                take(piece)
        return bytes(data)

    def _json(self, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        out = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Backend", self.server.name)
        self.send_header("X-Remove-Me", "yes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def _handle(self) -> None:
        self.server.hit(self.client_address[1])
        if self.path.startswith("/sse"):
            return self._sse()
        if self.path.startswith("/upload"):
            return self._upload()
        if self.path.startswith("/download/"):
            return self._download(int(self.path.split("/")[2]))
        body = self._read_body()
        self._json({
            "server": self.server.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "peer_port": self.client_address[1],
            "body": body.decode("latin-1"),
        })

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, event in enumerate((b"data: first\n\n", b"data: second\n\n")):
            if i:
                time.sleep(1.5)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _upload(self) -> None:
        digest = hashlib.sha256()
        state: dict[str, Any] = {"count": 0, "first": None}

        def on_chunk(piece: bytes) -> None:
            if state["first"] is None:
                state["first"] = time.time()
            state["count"] += len(piece)
            digest.update(piece)

        self._read_body(on_chunk)
        self._json({"bytes": state["count"], "sha256": digest.hexdigest(), "first_byte_at": state["first"]})

    def _download(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        for part in pattern(n):
            self.wfile.write(part)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, name: str = "app") -> None:
        super().__init__((LOCAL, 0), AppHandler)
        self.name = name
        self.hits = 0
        self.peer_ports: list[int] = []
        self.conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self.conns.append(sock)

    def hit(self, peer_port: int) -> None:
        with self._lock:
            self.hits += 1
            self.peer_ports.append(peer_port)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def close(self) -> None:
        """Stop like a crashed server: no listener, and every open connection cut."""
        self.shutdown()
        self.server_close()
        with self._lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class WsEchoServer:
    """A websocket echo server on a thread; `close()` stops it. With `ssl_context` it serves TLS (an
    https:// backend); `process_request(connection, request)` may answer a request itself."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, process_request: Any = None) -> None:
        from websockets.sync.server import serve

        def echo(ws: Any) -> None:
            for message in ws:
                ws.send(message)

        self.server = serve(echo, LOCAL, 0, ssl=ssl_context, process_request=process_request)
        self.port = self.server.socket.getsockname()[1]
        self.scheme = "http" if ssl_context is None else "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{LOCAL}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


class AlpnWsEchoServer(WsEchoServer):
    """A websocket echo server on TLS that picks h2 whenever a client offers it (ALPN h2, http/1.1),
    as Node's and Vite's HTTPS dev servers do: a proxy that offers h2 for a websocket fails here.
    `alpn` records what each connection negotiated."""

    def __init__(self, cert: Any) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.alpn: list[str | None] = []

        def process_request(connection: Any, request: Any) -> None:
            self.alpn.append(connection.socket.selected_alpn_protocol())

        super().__init__(ssl_context=ctx, process_request=process_request)


class _BarrierHandler(BaseHTTPRequestHandler):
    """`GET /barrier/N`: answers only once N requests wait together (else 504 after the deadline);
    any other path answers at once (a probe, such as the Host check `start` makes, takes no place
    at the barrier)."""

    protocol_version = "HTTP/1.1"
    server: "BarrierServer"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.path.startswith("/barrier/"):
            self._answer(200, b"ok")
            return
        try:
            index = self.server.barrier.wait(timeout=self.server.deadline)
            status, body = 200, b"%d" % index
        except threading.BrokenBarrierError:
            status, body = 504, b"not all requests arrived together"
        self._answer(status, body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class BarrierServer(ThreadingHTTPServer):
    """An HTTP/1.1 backend whose requests complete only when `parties` of them are in flight at once."""

    daemon_threads = True
    request_queue_size = 512

    def __init__(self, parties: int, deadline: float = 20.0) -> None:
        super().__init__((LOCAL, 0), _BarrierHandler)
        self.barrier = threading.Barrier(parties)
        self.deadline = deadline
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOCAL}:{self.server_address[1]}"

    def close(self) -> None:
        self.barrier.abort()
        self.shutdown()
        self.server_close()


def tls_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def connect(port: int, sni: str | None, ca: str | None, timeout: float = 15) -> socket.socket:
    """A TCP (and, with `ca`, TLS with SNI `sni`, verified) connection to 127.0.0.1:port."""
    raw = socket.create_connection((LOCAL, port), timeout=timeout)
    if ca is None:
        return raw
    return tls_context(ca).wrap_socket(raw, server_hostname=sni)


class Client:
    """One keep-alive client connection to a tunnel; `request` reuses it while the server lets it."""

    def __init__(self, port: int, host: str, ca: str | None = None, timeout: float = 15) -> None:
        self.port, self.host, self.ca, self.timeout = port, host, ca, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.connections = 0

    def _open(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(LOCAL, self.port, timeout=self.timeout)
        conn.sock = connect(self.port, self.host.split(":")[0], self.ca, self.timeout)
        self.connections += 1
        return conn

    def request(self, method: str = "GET", path: str = "/", body: Any = None,
                headers: dict[str, str] | None = None, retry_reused: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request. With `retry_reused`, a request whose *reused* keep-alive connection the
        server closed before answering is retried once on a new connection (as browsers do)."""
        reused = self.conn is not None
        if self.conn is None:
            self.conn = self._open()
        try:
            return self._exchange(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                http.client.BadStatusLine, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.close()
            if not (retry_reused and reused):
                raise
            self.conn = self._open()
            return self._exchange(method, path, body, headers)

    def _exchange(self, method: str, path: str, body: Any, headers: dict[str, str] | None) -> tuple[int, dict[str, str], bytes]:
        assert self.conn is not None
        self.conn.request(method, path, body=body, headers={"Host": self.host, **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
        if response.will_close:
            self.close()
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get(port: int, host: str, path: str = "/", ca: str | None = None, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    client = Client(port, host, ca)
    try:
        return client.request(method, path, headers=headers)
    finally:
        client.close()


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


# ----- raw TCP backends: one that never answers, one that relays (loops) --------------------------------

class _Listener:
    """A TCP listener on 127.0.0.1 whose accepted connections go to `handle` (on a thread); the
    base of `SilentServer` and `Relay`."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOCAL, 0))
        self.open: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """Keep the connection open and never answer (a hung backend)."""

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


class SilentServer(_Listener):
    """Accepts connections and reads requests, but never answers (a hung backend)."""


class Relay(_Listener):
    """A TCP relay to 127.0.0.1:`target` (think: a dev server proxying to another URL). Pointed at
    gotunnel's own port it makes a loop no address check can see."""

    def __init__(self, target: int) -> None:
        self.target = target
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection((LOCAL, self.target))
        self.open.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
