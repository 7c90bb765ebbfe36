"""HTTP/2 defences of the builtin engine. Each attack must cost the attacker its connection (GOAWAY
with the right code), reach no backend, and leave other clients' connections untouched."""

from __future__ import annotations

import threading
import time

import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, backend_a, engine_factory, make_table, pki, ports, wait_for,
)
from gotunnel_builtin_proxy import h2_frames as F
from gotunnel_builtin_proxy.h2_protocol import MAX_CONCURRENT_STREAMS, MAX_EARLY_RESETS
from gotunnel_core.testing.h2client import H2Client, attack_goaway, raw_frame, read_frames, read_goaway, tls_socket

PREFACE = F.PREFACE + raw_frame(F.SETTINGS, 0, 0)


@pytest.fixture
def proxy(engine_factory, backend_a, ports, pki):
    eng = engine_factory({"idle_timeout": 1.0, "max_header_size": 16384})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    return eng, ports[1]


def headers_block(path: str) -> bytes:
    return F.encode_headers([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"alpha.localhost"),
                             (b":path", path.encode())])


def valid_request(sid: int, path: str) -> bytes:
    return raw_frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, sid, headers_block(path))


def attack(port: int, pki, payload: bytes) -> int | None:
    """Open a raw h2 connection, send `payload` in one go, return the GOAWAY code received (also
    when the engine closes before the whole payload is sent, as it may under load)."""
    return attack_goaway(port, "alpha.localhost", str(pki.ca_file), payload)


class GoodClient:
    """Requests on its own connection in a thread while an attack runs; every one must succeed."""

    def __init__(self, port: int, pki) -> None:
        self.c = H2Client(port, "alpha.localhost", str(pki.ca_file))
        self.statuses: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set() and i < 500:
                self.statuses.append(self.c.request("GET", f"/good/{i}").status)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.errors.append(exc)

    def finish(self) -> list[int]:
        wait_for(lambda: len(self.statuses) >= 3 or self.errors, what="good client requests")
        self.stop.set()
        self.thread.join(30)
        self.c.close()
        assert not self.errors, self.errors
        return self.statuses


MALFORMED = {
    "HEADERS on stream 0": (raw_frame(F.HEADERS, F.END_HEADERS, 0, headers_block("/x")), F.PROTOCOL_ERROR),
    "HEADERS on an even stream": (raw_frame(F.HEADERS, F.END_HEADERS, 2, headers_block("/x")), F.PROTOCOL_ERROR),
    "PING of 7 bytes": (raw_frame(F.PING, 0, 0, b"1234567"), F.FRAME_SIZE_ERROR),
    "SETTINGS of 5 bytes": (raw_frame(F.SETTINGS, 0, 0, b"12345"), F.FRAME_SIZE_ERROR),
    "WINDOW_UPDATE of 0": (raw_frame(F.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), F.PROTOCOL_ERROR),
    "window overflow": (raw_frame(F.WINDOW_UPDATE, 0, 0, (2**31 - 1).to_bytes(4, "big")), F.FLOW_CONTROL_ERROR),
    "frame over MAX_FRAME_SIZE": (raw_frame(F.DATA, 0, 1, b"x" * 16385), F.FRAME_SIZE_ERROR),
    "DATA on an idle stream": (raw_frame(F.DATA, 0, 9, b"x"), F.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (raw_frame(F.CONTINUATION, F.END_HEADERS, 1, b""), F.PROTOCOL_ERROR),
    "PUSH_PROMISE from a client": (raw_frame(F.PUSH_PROMISE, F.END_HEADERS, 1, b"\0\0\0\2"), F.PROTOCOL_ERROR),
    "invalid HPACK index": (raw_frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 5, b"\xff\x80\x01"),
                            F.COMPRESSION_ERROR),
    "bad SETTINGS_MAX_FRAME_SIZE": (raw_frame(F.SETTINGS, 0, 0, b"\0\5\0\0\0\1"), F.PROTOCOL_ERROR),
    "padding longer than the frame": (raw_frame(F.HEADERS, F.END_HEADERS | F.PADDED, 5, b"\x09abc"),
                                      F.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_frame_gets_goaway_and_reaches_no_backend(proxy, pki, backend_a, case):
    _, port = proxy
    bad, code = MALFORMED[case]
    # A valid request travels in the same write just before the bad frame: it must not be relayed either.
    assert attack(port, pki, PREFACE + valid_request(1, "/before-bad-frame") + bad) == code
    assert attack(port, pki, b"GET / HTTP/1.1\r\n\r\n") == F.PROTOCOL_ERROR  # not the preface
    time.sleep(0.2)  # let a wrongly relayed request arrive before the check
    assert not backend_a.requests


def test_malformed_request_resets_only_its_stream(proxy, pki, backend_a):
    _, port = proxy
    bad_fields = ([(b"X-Upper", b"1")], [(b"connection", b"close")], [(b"te", b"gzip")], [(b"x-a", b" lead")],
                  [(b"content-length", b"x")])
    out = PREFACE
    for i, fields in enumerate(bad_fields):
        out += raw_frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 1 + 2 * i, headers_block("/malformed") + F.encode_headers(fields))
    good_sid = 1 + 2 * len(bad_fields)
    out += valid_request(good_sid, "/after")
    with tls_socket(port, "alpha.localhost", str(pki.ca_file)) as s:
        s.sendall(out)
        frames = read_frames(s, lambda fs: any(f[0] == F.DATA and f[2] == good_sid and f[1] & F.END_STREAM for f in fs))
    resets = {sid: int.from_bytes(p, "big") for t, _, sid, p in frames if t == F.RST_STREAM}
    assert resets == {1 + 2 * i: F.PROTOCOL_ERROR for i in range(len(bad_fields))}
    assert any(t == F.HEADERS and sid == good_sid for t, _, sid, _ in frames)
    assert not any(t == F.GOAWAY for t, _, _, _ in frames)
    assert [r["path"] for r in backend_a.requests] == ["/after"]


def test_hpack_bomb_gets_enhance_your_calm(proxy, pki, backend_a):
    _, port = proxy
    good = GoodClient(port, pki)
    # One 4 KB header added to the dynamic table, then referenced 40 times by one byte each: 160 KB decoded.
    name, value = b"x-bomb", b"b" * 4000
    insert = b"\x40" + F._literal(name) + F._literal(value)
    block = headers_block("/bomb") + insert + b"\xbe" * 40
    assert attack(port, pki, PREFACE + raw_frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 1, block)) == F.ENHANCE_YOUR_CALM
    assert set(good.finish()) == {200}
    assert all(r["path"] != "/bomb" for r in backend_a.requests)


def test_oversized_header_block_and_continuation_flood(proxy, pki, backend_a):
    _, port = proxy
    good = GoodClient(port, pki)
    start = raw_frame(F.HEADERS, F.END_STREAM, 1, headers_block("/cont"))
    flood = start + raw_frame(F.CONTINUATION, 0, 1, b"") * 200  # empty frames cost nothing to send
    assert attack(port, pki, PREFACE + flood) == F.ENHANCE_YOUR_CALM
    big = start + raw_frame(F.CONTINUATION, 0, 1, b"\0" * 9000) * 3  # grows past max_header_size
    assert attack(port, pki, PREFACE + big) == F.ENHANCE_YOUR_CALM
    assert set(good.finish()) == {200}
    assert all(r["path"] != "/cont" for r in backend_a.requests)


@pytest.mark.parametrize("kind", ["SETTINGS", "PING", "PRIORITY", "empty DATA"])
def test_control_frame_floods_get_enhance_your_calm(proxy, pki, kind):
    _, port = proxy
    good = GoodClient(port, pki)
    one = {
        "SETTINGS": raw_frame(F.SETTINGS, 0, 0, b"\0\3\0\0\0\x64"),
        "PING": raw_frame(F.PING, 0, 0, b"12345678"),
        "PRIORITY": raw_frame(F.PRIORITY, 0, 3, b"\0\0\0\1\x10"),
        "empty DATA": raw_frame(F.DATA, 0, 1, b""),
    }[kind]
    opener = raw_frame(F.HEADERS, F.END_HEADERS, 1, F.encode_headers([
        (b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"alpha.localhost"), (b":path", b"/up")]))
    payload = PREFACE + (opener if kind == "empty DATA" else b"") + one * 5000
    assert attack(port, pki, payload) == F.ENHANCE_YOUR_CALM
    assert set(good.finish()) == {200}


def test_rapid_reset_is_cut_off(proxy, pki, backend_a):
    _, port = proxy
    good = GoodClient(port, pki)
    # 1,000 streams opened and cancelled at once; the proxy may hang up before all are sent.
    payload = PREFACE + b"".join(
        valid_request(sid, f"/rapid/{sid}") + raw_frame(F.RST_STREAM, 0, sid, F.CANCEL.to_bytes(4, "big"))
        for sid in range(1, 2000, 2))
    assert attack(port, pki, payload) == F.ENHANCE_YOUR_CALM
    rapid = [r for r in backend_a.requests if r["path"].startswith("/rapid/")]
    assert len(rapid) <= MAX_EARLY_RESETS
    assert set(good.finish()) == {200}


def test_streams_beyond_the_limit_are_refused_then_cut_off(engine_factory, backend_a, ports, pki):
    eng = engine_factory({"idle_timeout": 30.0})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    post = F.encode_headers([(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"alpha.localhost"),
                             (b":path", b"/hold")])
    with tls_socket(ports[1], "alpha.localhost", str(pki.ca_file)) as s:
        s.sendall(PREFACE + raw_frame(F.SETTINGS, F.ACK, 0))
        frames = read_frames(s, lambda fs: any(f[0] == F.SETTINGS and not f[1] & F.ACK for f in fs))
        settings = next(p for t, fl, _, p in frames if t == F.SETTINGS and not fl & F.ACK)
        values = {int.from_bytes(settings[i:i + 2], "big"): int.from_bytes(settings[i + 2:i + 6], "big")
                  for i in range(0, len(settings), 6)}
        assert values[F.S_MAX_CONCURRENT_STREAMS] == MAX_CONCURRENT_STREAMS
        assert values[F.S_ENABLE_CONNECT_PROTOCOL] == 1
        s.sendall(b"".join(raw_frame(F.HEADERS, F.END_HEADERS, 1 + 2 * i, post) for i in range(MAX_CONCURRENT_STREAMS)))
        wait_for(lambda: eng.in_loop(
            lambda: sum(len(getattr(c, "streams", {})) for c in eng.engine.st.conns)) == MAX_CONCURRENT_STREAMS,
            what="100 open streams")
        extra = 1 + 2 * MAX_CONCURRENT_STREAMS
        s.sendall(valid_request(extra, "/one-too-many"))
        frames = read_frames(s, lambda fs: any(f[0] == F.RST_STREAM and f[2] == extra for f in fs))
        assert [int.from_bytes(p, "big") for t, _, sid, p in frames if t == F.RST_STREAM and sid == extra] == [F.REFUSED_STREAM]
        assert not any(t == F.RST_STREAM and sid < extra for t, _, sid, _ in frames)  # the others stay open
        s.sendall(b"".join(valid_request(extra + 2 * k, "/flood") for k in range(1, 2 * MAX_CONCURRENT_STREAMS + 5)))
        assert read_goaway(s) == F.ENHANCE_YOUR_CALM
    assert all(r["path"] not in ("/one-too-many", "/flood") for r in backend_a.requests)


def test_stalled_window_does_not_pin_a_stream(proxy, pki, backend_a):
    """A client that never opens its window: the stream is reset after idle_timeout (1 s here), the
    backend connection closed, and the connection itself stays usable."""
    eng, port = proxy
    c = H2Client(port, "alpha.localhost", str(pki.ca_file), settings={4: 0})  # INITIAL_WINDOW_SIZE 0
    try:
        sid = c.start("GET", f"/download/{32 << 20}")
        r = c.wait(sid, timeout=10)
        assert r.status == 200 and r.reset == F.CANCEL and not r.body

        def streams() -> int:
            return sum(len(getattr(conn, "streams", {})) for conn in eng.engine.st.conns)

        assert eng.in_loop(streams) == 0
        c.conn.update_settings({4: 65535})
        c.flush()
        assert c.request("GET", "/after-stall").status == 200
    finally:
        c.close()
