"""HTTP/2 and gRPC for the conformance suite: a real HTTP/2 client (the `h2` library on a TLS socket
that negotiates ALPN), websocket frames for RFC 8441 streams, and real gRPC servers (grpcio) on
h2c or TLS with a client for them. Everything listens on 127.0.0.1 on free ports.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from conformance_backends import WsEchoServer

LOCAL = "127.0.0.1"


# ----- an HTTP/2 client ------------------------------------------------------------------------------

@dataclass
class H2Stream:
    """What arrived on one stream. `on_data` (if set) takes the body instead of `body`."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM
    on_data: Callable[[bytes], None] | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


class H2Client:
    """One TLS connection to 127.0.0.1:`port` with SNI `host`, trusting only `ca`, offering `alpn`.

    When the server picks h2, `request`/`send`/`wait` drive HTTP/2 streams with the `h2` library;
    received data is acknowledged at once, so flow control never stalls a download.
    """

    def __init__(self, port: int, host: str, ca: str, alpn: Iterable[str] = ("h2", "http/1.1"),
                 timeout: float = 30.0) -> None:
        import h2.config
        import h2.connection

        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection((LOCAL, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=host.split(":")[0])
        self.protocol = self.sock.selected_alpn_protocol()
        self.authority = host
        self.streams: dict[int, H2Stream] = {}
        self.settings_seen = False
        self.terminated: Any = None  # the ConnectionTerminated event (GOAWAY), if any
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        if self.protocol == "h2":
            self.conn.initiate_connection()
            self._flush()

    # -- plumbing ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self) -> None:
        """Read once from the socket and handle every event it yields."""
        import h2.events as ev

        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, ev.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(event, ev.ResponseReceived) and stream is not None:
                stream.headers = list(event.headers)
                stream.status = int(dict(event.headers)[":status"])
            elif isinstance(event, ev.InformationalResponseReceived):
                pass
            elif isinstance(event, ev.DataReceived) and stream is not None:
                if stream.on_data is not None:
                    stream.on_data(event.data)
                else:
                    stream.body.extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, ev.TrailersReceived) and stream is not None:
                stream.trailers = list(event.headers)
            elif isinstance(event, ev.StreamEnded) and stream is not None:
                stream.ended = True
            elif isinstance(event, ev.StreamReset) and stream is not None:
                stream.reset = event.error_code
                stream.ended = True
            elif isinstance(event, ev.ConnectionTerminated):
                self.terminated = event
        self._flush()

    def pump_until(self, done: Callable[[], bool], timeout: float = 30.0, what: str = "the server") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            if self.terminated is not None:
                raise ConnectionError(f"GOAWAY from the server: {self.terminated}")
            self.pump()

    def remote_settings(self) -> dict[int, int]:
        """The server's SETTINGS (its first SETTINGS frame must arrive first)."""
        self.pump_until(lambda: self.settings_seen, 10, "the server's SETTINGS")
        return {int(k): v for k, v in self.conn.remote_settings.items()}

    # -- streams ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), *, end: bool = True,
                protocol: str | None = None, on_data: Callable[[bytes], None] | None = None) -> int:
        """Open a stream (HEADERS only; `end=False` leaves the body to `send`)."""
        sid = self.conn.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        if protocol is not None:  # RFC 8441 extended CONNECT
            pseudo.insert(1, (":protocol", protocol))
        self.streams[sid] = H2Stream(on_data=on_data)
        self.conn.send_headers(sid, pseudo + list(headers), end_stream=end)
        self._flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send `data` on a stream as flow control allows (reading the server's WINDOW_UPDATEs)."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                if self.streams[sid].reset is not None:
                    raise ConnectionError(f"stream {sid} reset by the server ({self.streams[sid].reset})")
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self._flush()
        if end:
            self.conn.end_stream(sid)
            self._flush()

    def wait(self, sid: int, timeout: float = 60.0) -> H2Stream:
        stream = self.streams[sid]
        self.pump_until(lambda: stream.ended, timeout, f"stream {sid} to end")
        return stream

    def get(self, path: str, headers: Iterable[tuple[str, str]] = (), timeout: float = 30.0) -> H2Stream:
        return self.wait(self.request("GET", path, headers), timeout)

    def close(self) -> None:
        try:
            if self.protocol == "h2":
                self.conn.close_connection()
                self._flush()
        except OSError:
            pass
        self.sock.close()


# ----- websocket frames on an RFC 8441 stream -----------------------------------------------------------

def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client sends it."""
    from websockets.frames import Frame, Opcode

    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


class WsFrameReader:
    """Parses the unmasked frames a server sends (websockets' own parser) from the bytes fed to it."""

    def __init__(self) -> None:
        from websockets.frames import Frame
        from websockets.streams import StreamReader

        self._reader = StreamReader()
        self._parser = Frame.parse(self._reader.read_exact, mask=False, max_size=None, extensions=[])
        next(self._parser)
        self.texts: list[str] = []

    def feed(self, data: bytes) -> None:
        from websockets.frames import Frame

        self._reader.feed_data(data)
        while True:
            try:
                next(self._parser)
                return  # needs more bytes
            except StopIteration as done:
                frame = done.value
                assert isinstance(frame, Frame)
                self.texts.append(frame.data.decode())
                self._parser = Frame.parse(self._reader.read_exact, mask=False, max_size=None, extensions=[])
                next(self._parser)


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


# ----- a backend that proves concurrency -----------------------------------------------------------------

class _BarrierHandler(BaseHTTPRequestHandler):
    """`GET /barrier/N`: answers only once N requests wait together (else 504 after the deadline)."""

    protocol_version = "HTTP/1.1"
    server: "BarrierServer"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            index = self.server.barrier.wait(timeout=self.server.deadline)
            status, body = 200, b"%d" % index
        except threading.BrokenBarrierError:
            status, body = 504, b"not all requests arrived together"
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


# ----- gRPC --------------------------------------------------------------------------------------------

SERVICE = "gotunnel.test.Echo"
MIB = 1 << 20
#: gRPC's default message limit is 4 MiB; the suite sends 16 MiB messages.
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
FAIL_MESSAGE = "refused: ünïcode & 100% sure"


class GrpcBackend:
    """A grpcio server with raw-bytes methods (no protobuf): on h2c, or on TLS (ALPN h2) with `cert`.

    - `Unary`: answers the request reversed, with trailing metadata `x-trailer`; the request
      `fail` ends with FAILED_PRECONDITION and `FAIL_MESSAGE` instead.
    - `Big`: answers the SHA-256 of the request followed by that many bytes again (16 MiB both ways).
    - `Count`: server streaming; `N` -> N messages. The second waits until the client saw the first
      (`seen_first`), so a buffering proxy cannot pass.
    - `Chat`: bidirectional echo, message by message.
    - `Remaining`: answers the deadline the server sees (seconds left, or `none`).
    - `Block`: waits until the call ends (its deadline); `cancelled` is set when the server saw it end.
    """

    def __init__(self, cert: Any = None) -> None:
        import grpc

        self.seen_first = threading.Event()
        self.cancelled = threading.Event()
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16), options=GRPC_OPTIONS)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Big": grpc.unary_unary_rpc_method_handler(self._big),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
            "Remaining": grpc.unary_unary_rpc_method_handler(self._remaining),
            "Block": grpc.unary_unary_rpc_method_handler(self._block),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if cert is None:
            self.port = self.server.add_insecure_port(f"{LOCAL}:0")
            self.url = f"h2c://{LOCAL}:{self.port}"
        else:
            creds = grpc.ssl_server_credentials([(Path(cert.key).read_bytes(), Path(cert.cert).read_bytes())])
            self.port = self.server.add_secure_port(f"{LOCAL}:0", creds)
            self.url = f"https://{LOCAL}:{self.port}"
        self.server.start()

    def _record(self, context: Any) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata()})

    def _unary(self, request: bytes, context: Any) -> bytes:
        import grpc

        self._record(context)
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, FAIL_MESSAGE)
        context.set_trailing_metadata((("x-trailer", "t-" + request.decode(errors="replace")[:20]),))
        return request[::-1]

    def _big(self, request: bytes, context: Any) -> bytes:
        return hashlib.sha256(request).digest() + request

    def _count(self, request: bytes, context: Any) -> Iterator[bytes]:
        n = int(request)
        for i in range(n):
            if i == 1 and not self.seen_first.wait(15):
                return  # the client never got the first message: the proxy buffered it
            yield b"%d" % i

    def _chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for message in requests:
            yield b"echo:" + message

    def _remaining(self, request: bytes, context: Any) -> bytes:
        left = context.time_remaining()
        return b"none" if left is None or left > 10 ** 6 else b"%.3f" % left

    def _block(self, request: bytes, context: Any) -> bytes:
        ended = threading.Event()
        context.add_callback(ended.set)
        if ended.wait(30):
            self.cancelled.set()
        return b"late"

    def close(self) -> None:
        self.server.stop(grace=None).wait(5)


class GrpcClient:
    """A grpcio channel to a tunnel over TLS: 127.0.0.1:`port`, SNI and :authority `host`, trusting only `ca`."""

    def __init__(self, port: int, host: str, ca: str) -> None:
        import grpc

        creds = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        options = GRPC_OPTIONS + [("grpc.ssl_target_name_override", host.split(":")[0]),
                                  ("grpc.default_authority", host)]
        self.channel = grpc.secure_channel(f"{LOCAL}:{port}", creds, options=options)

    def unary(self, method: str, request: bytes, timeout: float | None = 30, **kw: Any) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=timeout, **kw)

    def unary_with_call(self, method: str, request: bytes, timeout: float = 30) -> tuple[bytes, Any]:
        return self.channel.unary_unary(f"/{SERVICE}/{method}").with_call(request, timeout=timeout)

    def stream(self, method: str, request: bytes, timeout: float = 30) -> Any:
        return self.channel.unary_stream(f"/{SERVICE}/{method}")(request, timeout=timeout)

    def chat(self, requests: Iterator[bytes], timeout: float = 30) -> Any:
        return self.channel.stream_stream(f"/{SERVICE}/Chat")(requests, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def curl_http_version(port: int, host: str, ca: str, path: str = "/", *flags: str) -> tuple[str, str]:
    """(HTTP version, status) `curl` reports for an HTTPS GET of `host` (resolved to 127.0.0.1)."""
    import subprocess

    name = host.split(":")[0]
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", ca, "--resolve", f"{name}:{port}:{LOCAL}",
                          "-o", "/dev/null", "-w", "%{http_version} %{http_code}", *flags,
                          f"https://{name}:{port}{path}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    version, status = out.stdout.split()
    return version, status
