"""A small synchronous HTTP/2 client for tests: TLS with ALPN and the `h2` library on a socket.

It is a real client (the python-hyper state machine) driven by hand, so tests can also send what a
well-behaved client never would (raw frames) and read the GOAWAY the server answers. Also here:
websocket frames for RFC 8441 streams (websockets' own framing) and `curl --http2`.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

LOCAL = "127.0.0.1"


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None
    on_data: Callable[[bytes], None] | None = None  # takes the body instead of `body` when set

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Closed(Exception):
    """The server closed the connection; `goaway` holds the error code it sent, if any."""

    def __init__(self, goaway: int | None, last_stream_id: int | None = None) -> None:
        super().__init__(f"connection closed (GOAWAY {goaway})")
        self.goaway = goaway
        self.last_stream_id = last_stream_id


def tls_socket(port: int, sni: str, ca: str | None, alpn: tuple[str, ...] = ("h2",), timeout: float = 10) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection((LOCAL, port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=sni)


class H2Client:
    """One HTTP/2 connection; `request` runs one exchange, `start`/`pump` drive several at once."""

    def __init__(self, port: int, sni: str, ca: str | None, settings: dict[int, int] | None = None,
                 window: int | None = None, timeout: float = 15, alpn: tuple[str, ...] = ("h2",)) -> None:
        self.sock = tls_socket(port, sni, ca, alpn=alpn, timeout=timeout)
        self.alpn = self.sock.selected_alpn_protocol()
        self.authority = sni
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        if settings:
            # Any code, also ones the h2 library has no name for (its annotation wants SettingCodes).
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=cast(Any, settings))
        self.responses: dict[int, Response] = {}
        self.goaway: int | None = None
        self.last_stream_id: int | None = None
        self.remote_settings: dict[int, int] = {}
        self.settings_received = False  # the server's first SETTINGS frame arrived
        self.auto_ack = True
        if self.alpn != "h2":  # offered http/1.1 too and got it: no HTTP/2 to speak
            return
        self.conn.initiate_connection()
        if window:
            self.conn.increment_flow_control_window(window)
        self.sock.sendall(self.conn.data_to_send())

    # -- sending -----------------------------------------------------------------------------
    def start(self, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None,
              body: bytes | None = None, end: bool = True, authority: str | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "https"), (":authority", authority or self.authority), (":path", path)]
        head += headers or []
        self.conn.send_headers(sid, head, end_stream=end and body is None)
        self.responses[sid] = Response()
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send within flow control, reading the server's frames while the window is closed."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(0.5)
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.flush()
        self.sock.sendall(data)

    # -- receiving -----------------------------------------------------------------------------
    def pump(self, timeout: float = 5.0) -> list[Any]:
        """Read once (up to `timeout`) and handle the events; raises Closed on EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        except (ConnectionResetError, ssl.SSLError, OSError):
            raise Closed(self.goaway, self.last_stream_id) from None
        if not data:
            raise Closed(self.goaway, self.last_stream_id)
        events = self.conn.receive_data(data)
        for ev in events:
            r = self.responses.get(getattr(ev, "stream_id", -1))
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                head = _text_headers(ev.headers)
                r.headers = [(k, v) for k, v in head if not k.startswith(":")]
                r.status = int(dict(head)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None and r.on_data is not None:
                    r.on_data(ev.data)
                elif r is not None:
                    r.body += ev.data
                if self.auto_ack and ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived) and r is not None:
                r.trailers = _text_headers(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r.reset = ev.error_code
                r.ended = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
                self.last_stream_id = ev.last_stream_id
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_received = True
                self.remote_settings.update({int(k): v.new_value for k, v in ev.changed_settings.items()})
        self.flush()
        return events

    def wait(self, sid: int, timeout: float = 15.0) -> Response:
        deadline = time.monotonic() + timeout
        r = self.responses[sid]
        while not r.ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {sid} did not end within {timeout} s")
            self.pump(0.5)
        return r

    def wait_closed(self, timeout: float = 10.0) -> Closed:
        """Read until the server closes the connection; returns what it said."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.pump(0.5)
            except Closed as closed:
                return closed
            except h2.exceptions.ProtocolError:
                # our own state machine refuses what follows the server's GOAWAY: read raw
                return self._drain_raw(deadline)
        raise AssertionError("the server did not close the connection")

    def _drain_raw(self, deadline: float) -> Closed:
        code = read_goaway(self.sock, max(0.5, deadline - time.monotonic()))
        return Closed(self.goaway if code is None else code, self.last_stream_id)

    def request(self, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, authority: str | None = None) -> Response:
        return self.wait(self.start(method, path, headers, body, authority=authority))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _text_headers(headers: Any) -> list[tuple[str, str]]:
    """Headers of an event as text (they are: the connection decodes them, `header_encoding`)."""
    return [(str(k), str(v)) for k, v in headers]


def raw_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


def read_goaway(sock: ssl.SSLSocket, timeout: float = 10.0) -> int | None:
    """Read raw frames until EOF; the error code of the GOAWAY seen (None if none)."""
    return goaway_code(read_frames(sock, lambda fs: False, timeout))


def read_frames(sock: ssl.SSLSocket, done: Any, timeout: float = 10.0) -> list[tuple[int, int, int, bytes]]:
    """Read raw frames (type, flags, stream id, payload) until `done(frames)` is true or EOF."""
    deadline = time.monotonic() + timeout
    buf = b""
    frames: list[tuple[int, int, int, bytes]] = []
    sock.settimeout(0.5)
    while time.monotonic() < deadline and not done(frames):
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        buf = _take_frames(buf + chunk, frames)
    return frames


def _take_frames(buf: bytes, frames: list[tuple[int, int, int, bytes]]) -> bytes:
    """Append the whole frames at the start of `buf` to `frames`; returns the incomplete rest."""
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + length]))
        buf = buf[9 + length:]
    return buf


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    """The error code of the first GOAWAY among `frames` (None if none)."""
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == 7]
    return codes[0] if codes else None


def attack_goaway(port: int, sni: str, ca: str | None, payload: bytes, timeout: float = 10.0) -> int | None:
    """Send `payload` (raw h2 bytes, preface included) on a new TLS connection, then read until the
    server closes; the error code of the GOAWAY it sent (None if none).

    A server that stops a flood closes while the rest is still being sent, and its close can reset
    the connection; a TLS socket then fails the send and its reads. So TLS runs on memory BIOs here
    and only the TCP socket meets the reset: the unsent rest is dropped, and what the server sent
    before closing is still read from the socket and decrypted.
    """
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    ctx.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with socket.create_connection((LOCAL, port), timeout=timeout) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection during the TLS handshake") from None
                incoming.write(data)
        written = 0
        while written < len(payload):
            written += tls.write(payload[written:])
        try:
            raw.sendall(outgoing.read())
        except OSError:
            pass  # closed (or reset) by the server mid-flood: the rest is not needed
        deadline = time.monotonic() + timeout
        buf = b""
        frames: list[tuple[int, int, int, bytes]] = []
        raw.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = raw.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            incoming.write(data)
            try:
                while plain := tls.read(65536):  # b"": the server's close_notify
                    buf = _take_frames(buf + plain, frames)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
    return goaway_code(frames)


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
                self.texts.append(bytes(frame.data).decode())
                self._parser = Frame.parse(self._reader.read_exact, mask=False, max_size=None, extensions=[])
                next(self._parser)


def curl_http_version(port: int, host: str, ca: str, path: str = "/", *flags: str) -> tuple[str, str]:
    """(HTTP version, status) `curl` reports for an HTTPS GET of `host` (resolved to 127.0.0.1)."""
    name = host.split(":")[0]
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", ca, "--resolve", f"{name}:{port}:{LOCAL}",
                          "-o", "/dev/null", "-w", "%{http_version} %{http_code}", *flags,
                          f"https://{name}:{port}{path}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    version, status = out.stdout.split()
    return version, status


class H2cEchoServer:
    """A cleartext HTTP/2 (`h2c://`) backend on a free port: answers every stream with a JSON echo
    of the request's header fields, pseudo-headers included (what `:authority` reached it)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOCAL, 0))
        self.port = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"h2c://{LOCAL}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        heads: dict[int, list[tuple[str, str]]] = {}
        try:
            sock.sendall(conn.data_to_send())
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = [(str(k), str(v)) for k, v in event.headers]
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in heads:
                        body = json.dumps({"headers": heads.pop(event.stream_id)}).encode()
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
                sock.sendall(conn.data_to_send())
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
