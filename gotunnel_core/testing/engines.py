"""Driving an engine in-process in tests: a throwaway PKI, echo backends, route tables, the engine
on an event loop thread, and low-level HTTP clients.

Everything listens on 127.0.0.1 on ports picked at run time, and every helper has a `close`/`stop`
that the fixtures call also when a test fails. The fixtures here (`pki`, `backend_a`, `backend_b`,
`ports`) are imported by the test modules that use them.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..models import CertFiles, Listen, RouteTable, Tunnel
from .runner import free_port, wait_for  # noqa: F401 - engine tests poll too

LOCAL = "127.0.0.1"


# -- certificates -----------------------------------------------------------------------------
@dataclass
class TestPKI:
    ca_file: Path
    certs: dict[str, CertFiles]
    default: CertFiles

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


def make_pki(directory: Path, names: list[str]) -> TestPKI:
    """A throwaway CA and one leaf per tunnel name (SANs NAME.localhost, NAME.local) plus a default leaf."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gotunnel test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(label: str, dns: list[str]) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        safe = label.replace("*", "_wild")
        cert_path, key_path = directory / f"{safe}.crt", directory / f"{safe}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return CertFiles(str(cert_path), str(key_path))

    certs = {name: leaf(name, [f"{name}.localhost", f"{name}.local"]) for name in names}
    default = leaf("default", ["gotunnel-default.localhost"])
    return TestPKI(ca_file, certs, default)


# -- backends ------------------------------------------------------------------------------------
class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of the head it received, and a few special paths."""

    protocol_version = "HTTP/1.1"
    server: "EchoServer"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Head and body go out in separate writes: without NODELAY, Nagle + delayed ACK cost 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _stream_body(self, left: int | None = None) -> int:
        """Read the request body without keeping it; return its size."""
        total = 0
        if left is None and self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return total
                while size:
                    got = len(self.rfile.read(min(size, 1 << 20)))
                    total += got
                    size -= got
                self.rfile.readline()
        if left is None:
            left = int(self.headers.get("Content-Length") or 0)
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            total += len(chunk)
            left -= len(chunk)
        return total

    def _special(self) -> bool:
        path = self.path
        if path.startswith("/upload"):
            if path.endswith("stall=1"):
                # A slow consumer: read a little, then nothing for a second.
                self.rfile.read(1 << 20)
                time.sleep(1.0)
                n = (1 << 20) + self._stream_body(int(self.headers["Content-Length"]) - (1 << 20))
            else:
                n = self._stream_body()
            self.server.record(self, self.client_address)
            out = json.dumps({"received": n}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return True
        if path.startswith("/download/"):
            n = int(path.rsplit("/", 1)[1])
            self.server.record(self, self.client_address)
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * (1 << 20)
            while n:
                k = min(n, len(block))
                self.wfile.write(block[:k] if k < len(block) else block)
                n -= k
            return True
        if path == "/sse":
            self.server.record(self, self.client_address)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            chunk(b"data: first\n\n")
            self.server.sse_release.wait(20)
            chunk(b"data: last\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return True
        if path == "/close":
            self._body()
            self.server.record(self, self.client_address)
            out = json.dumps({"peer_port": self.client_address[1]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(out)
            self.close_connection = True
            return True
        if path == "/health":
            self.server.record(self, self.client_address)
            self.send_response(200 if self.server.healthy else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def _handle(self) -> None:
        if self._special():
            return
        body = self._body()
        peer = self.client_address
        self.server.record(self, peer)
        path = self.path
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            self.send_response(code)
            if code not in (204, 304):
                self.send_header("Content-Length", "0")
            else:
                self.send_header("Content-Length", "5")  # a lying length the proxy must ignore
            self.end_headers()
            return
        info = {
            "server": self.server.name,
            "method": self.command,
            "path": path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "peer_port": peer[1],
            "body": body.decode("latin-1"),
        }
        out = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Backend", self.server.name)
        self.send_header("X-Remove-Me", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a proxy may open 100 connections at once (HTTP/2 streams)

    def __init__(self, name: str = "echo", port: int = 0, handler: type = EchoHandler) -> None:
        super().__init__((LOCAL, port), handler)
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.sse_release = threading.Event()
        self.healthy = True
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that leave mid-response are part of the tests

    def record(self, handler: BaseHTTPRequestHandler, peer: tuple[str, int]) -> None:
        with self.lock:
            self.requests.append({"path": handler.path, "peer": peer})

    def close(self) -> None:
        self.sse_release.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


# -- an engine on its own event loop thread ----------------------------------------------------------
class LoopThread:
    """Runs an engine on an event loop in a background thread so tests stay synchronous; `settle`
    lets a subclass drain its loop (closed pipes, transports) before the loop stops."""

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = engine
        self.started = False

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, table: RouteTable) -> None:
        self.call(self.engine.start(table))
        self.started = True

    def apply(self, table: RouteTable) -> None:
        self.call(self.engine.apply(table))

    def validate(self, table: RouteTable) -> None:
        self.call(self.engine.validate(table))

    def in_loop(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return self.call(run())

    def settle(self) -> None:
        """Hook: run on the loop after the engine stopped."""

    def close(self, stop: bool = True) -> None:
        if self.loop.is_closed():
            return
        try:
            if self.started and stop:
                self.call(self.engine.stop())
            self.settle()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


def make_table(tunnels: list[dict[str, Any]], http_port: int, https_port: int, pki: TestPKI | None = None) -> RouteTable:
    parsed = tuple(Tunnel.from_raw(t) for t in tunnels)
    certs = {}
    if pki is not None:
        certs = {t.name: pki.certs[t.name] for t in parsed if t.name in pki.certs}
    return RouteTable(Listen(LOCAL, http_port, https_port), parsed, certs, pki.default if pki else None)


def https_get(port: int, pki: TestPKI, sni: str, host: str | None = None, path: str = "/",
              verify: bool = True) -> tuple[int, dict[str, str], bytes]:
    """GET over TLS to 127.0.0.1:port with SNI `sni` (verified unless `verify` is False) and Host `host`."""
    ctx = pki.client_context()
    if not verify:
        ctx.check_hostname = False
    conn = http.client.HTTPSConnection(LOCAL, port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((LOCAL, port), timeout=10), server_hostname=sni)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or sni)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_get(port: int, host: str, path: str = "/", method: str = "GET", headers: dict[str, str] | None = None,
             body: bytes | None = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes and read until the server closes (or the timeout passes)."""
    with socket.create_connection((LOCAL, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close:
                break
        return b"".join(chunks)


def echo_json(body: bytes) -> dict[str, Any]:
    info = json.loads(body)
    info["hdr"] = {k.lower(): v for k, v in info["headers"]}
    return info


# -- pytest fixtures (imported by the test modules) ----------------------------------------------
@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path / "pki", ["alpha", "beta", "*.wild", "redir", "down", "multi", "ws"])


@pytest.fixture
def backend_a() -> Iterator[EchoServer]:
    server = EchoServer("A")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def backend_b() -> Iterator[EchoServer]:
    server = EchoServer("B")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()
