"""HTTP/2 on the builtin engine: ALPN, routing and every HTTP/1.1 behaviour on streams, websockets
over extended CONNECT (RFC 8441), pooling, and 100 MiB streamed each way with bounded memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, EchoServer, backend_a, backend_b, echo_json, engine_factory, free_port, make_table, pki, ports, wait_for,
)
from gotunnel_core.testing.backends import WsEchoServer
from gotunnel_core.testing.h2client import H2cEchoServer, H2Client, tls_socket
from test_builtin_routing import _hook_relay, _Plugin
from test_builtin_stream import RssWatcher

MiB = 1 << 20


@pytest.fixture
def ws_backend():
    server = WsEchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def h2proxy(engine_factory, backend_a, backend_b, ports, pki, ws_backend):
    eng = engine_factory({"idle_timeout": 5.0})
    eng.start(make_table([
        {"name": "alpha", "backends": backend_a.url},
        {"name": "beta", "backends": backend_b.url},
        {"name": "ws", "backends": ws_backend.url},
        {"name": "down", "backends": f"http://{LOCAL}:{free_port()}"},
    ], *ports, pki))
    return eng, ports[1]


def client(port: int, pki, name: str = "alpha", **kw) -> H2Client:
    c = H2Client(port, f"{name}.localhost", str(pki.ca_file), **kw)
    assert c.alpn == "h2"
    return c


def test_alpn_offers_h2_then_http11(h2proxy, pki):
    _, port = h2proxy
    with tls_socket(port, "alpha.localhost", str(pki.ca_file), alpn=("h2", "http/1.1")) as s:
        assert s.selected_alpn_protocol() == "h2"
    with tls_socket(port, "alpha.localhost", str(pki.ca_file), alpn=("http/1.1",)) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"GET /h1 HTTP/1.1\r\nHost: alpha.localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")


def test_http2_setting_off_offers_only_http11(engine_factory, backend_a, ports, pki):
    eng = engine_factory({"http2": False})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    with tls_socket(ports[1], "alpha.localhost", str(pki.ca_file), alpn=("h2", "http/1.1")) as s:
        assert s.selected_alpn_protocol() == "http/1.1"


def test_curl_http2_reports_http2(h2proxy, pki):
    _, port = h2proxy
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(pki.ca_file), "-o", "/dev/null",
                          "-w", "%{http_version} %{http_code}", "--resolve", f"alpha.localhost:{port}:{LOCAL}",
                          f"https://alpha.localhost:{port}/"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "2 200", out.stderr


def test_forwarded_headers_cookies_and_body(h2proxy, pki, backend_a):
    _, port = h2proxy
    c = client(port, pki)
    try:
        r = c.request("GET", "/p?q=1", [("x-forwarded-for", "10.9.8.7"), ("cookie", "a=1"), ("cookie", "b=2"),
                                        ("x-forwarded-proto", "http"), ("te", "trailers")])
        assert r.status == 200
        info = echo_json(bytes(r.body))
        h = info["hdr"]
        assert info["path"] == "/p?q=1" and info["version"] == "HTTP/1.1"
        assert h["host"] == "alpha.localhost" and h["x-forwarded-host"] == "alpha.localhost"
        assert h["x-forwarded-for"] == "10.9.8.7, 127.0.0.1" and h["x-forwarded-proto"] == "https"
        assert h["cookie"] == "a=1; b=2" and "te" not in h
        assert r.header("x-backend") == "A" and r.header("date")
        r = c.request("POST", "/post", [("content-length", "5")], body=b"hello")
        assert echo_json(bytes(r.body))["body"] == "hello"
        r = c.request("PUT", "/chunked", body=b"no length given")
        info = echo_json(bytes(r.body))
        assert info["body"] == "no length given" and info["hdr"]["transfer-encoding"] == "chunked"
        r = c.request("HEAD", "/head")
        assert r.status == 200 and not r.body and r.header("content-length")
        r = c.request("GET", "/status/204")
        assert r.status == 204 and not r.body
    finally:
        c.close()


def test_pages_misdirected_and_bad_gateway(h2proxy, pki):
    _, port = h2proxy
    c = client(port, pki)
    try:
        r = c.request("GET", "/", authority="nosuch.localhost")
        assert r.status == 404 and b"nosuch" in r.body and r.header("content-type").startswith("text/html")
        r = c.request("GET", "/", authority="beta.localhost")  # TLS named alpha
        assert r.status == 421
        assert c.request("GET", "/").status == 200  # the connection goes on
    finally:
        c.close()
    c = client(port, pki, "down")
    try:
        r = c.request("GET", "/")
        assert r.status == 502 and b"down" in r.body
    finally:
        c.close()
    c = client(port, pki, "beta")
    try:
        assert echo_json(bytes(c.request("GET", "/").body))["server"] == "B"
    finally:
        c.close()


def test_header_rules_path_prefix_and_weights(engine_factory, backend_a, backend_b, ports, pki):
    eng = engine_factory()
    eng.start(make_table([{
        "name": "alpha",
        "backends": [{"url": backend_a.url + "/api", "weight": 3}, {"url": backend_b.url + "/api", "weight": 1}],
        "headers": {
            "request": {"add": {"X-Added": "1", "X-Replace": "new"}, "remove": ["X-Drop"]},
            "response": {"add": {"X-Resp": "yes"}, "remove": ["X-Remove-Me"]},
        },
    }], *ports, pki))
    c = client(ports[1], pki)
    try:
        servers = []
        for _ in range(8):
            r = c.request("GET", "/v1/x", [("x-drop", "1"), ("x-replace", "old"), ("x-keep", "k")])
            info = echo_json(bytes(r.body))
            servers.append(info["server"])
            assert info["path"] == "/api/v1/x"
            assert info["hdr"]["x-added"] == "1" and info["hdr"]["x-replace"] == "new" and "x-drop" not in info["hdr"]
            assert [k.lower() for k, _ in info["headers"]].count("x-replace") == 1
            assert r.header("x-resp") == "yes" and r.header("x-remove-me") is None
        assert servers.count("A") == 6 and servers.count("B") == 2
    finally:
        c.close()


def test_request_hook_on_streams(engine_factory, backend_a, ports, pki):
    eng = engine_factory(hook=_hook_relay(_Plugin()))
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    c = client(ports[1], pki)
    try:
        r = c.request("GET", "/hooked")
        assert (r.status, bytes(r.body), r.header("x-hook")) == (418, b"short and stout", "alpha")
        info = echo_json(bytes(c.request("GET", "/rewrite/me").body))
        assert info["path"] == "/rewritten" and info["hdr"]["x-plugin"] == "https"
    finally:
        c.close()
    assert all(r["path"] != "/hooked" for r in backend_a.requests)


def test_health_checked_backend_is_skipped(engine_factory, backend_a, backend_b, ports, pki):
    backend_b.healthy = False
    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": [backend_a.url, backend_b.url],
                           "health": {"path": "/health", "interval": 0.1, "timeout": 1}}], *ports, pki))
    wait_for(lambda: sum(r["path"] == "/health" for r in backend_b.requests) >= 3, what="health checks")
    c = client(ports[1], pki)
    try:
        assert {echo_json(bytes(c.request("GET", "/").body))["server"] for _ in range(6)} == {"A"}
    finally:
        c.close()


def test_100_concurrent_streams_and_pooled_backend_connections(h2proxy, pki, backend_a):
    _, port = h2proxy
    c = client(port, pki)
    try:
        sids = [c.start("GET", f"/many/{i}") for i in range(100)]
        for sid in sids:
            r = c.wait(sid)
            assert r.status == 200
        assert {echo_json(bytes(c.responses[s].body))["path"] for s in sids} == {f"/many/{i}" for i in range(100)}
        before = {r["peer"][1] for r in backend_a.requests}
        for i in range(20):
            assert c.request("GET", f"/seq/{i}").status == 200
        ports_used = {r["peer"][1] for r in backend_a.requests if r["path"].startswith("/seq/")}
        assert ports_used <= before  # sequential streams reuse pooled keep-alive connections
    finally:
        c.close()


def _ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def test_websocket_over_extended_connect(h2proxy, pki):
    _, port = h2proxy
    c = client(port, pki, "ws")
    try:
        c.pump(1.0)
        assert c.remote_settings.get(8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        sid = c.start("CONNECT", "/chat", [(":protocol", "websocket"), ("sec-websocket-version", "13"),
                                          ("origin", "https://ws.localhost")], end=False)
        r = c.responses[sid]
        wait_for(lambda: c.pump(0.2) is not None and r.status, what="CONNECT answer")
        assert r.status == 200 and r.header("sec-websocket-accept") is None
        for text in (b"hello", b"over h2"):
            c.send_body(sid, _ws_frame(text))
            start = len(r.body)
            want = start + 2 + len(text)
            wait_for(lambda want=want: c.pump(0.2) is not None and len(r.body) >= want, what="echo")
            frame = bytes(r.body[start:])
            assert frame[0] == 0x81 and frame[1] == len(text) and frame[2:] == text
    finally:
        c.close()


def test_websocket_refused_by_backend_is_relayed(h2proxy, pki):
    _, port = h2proxy
    c = client(port, pki)  # alpha: a plain HTTP backend answers the upgrade with 200, not 101
    try:
        sid = c.start("CONNECT", "/", [(":protocol", "websocket"), ("sec-websocket-version", "13")], end=False)
        r = c.responses[sid]
        wait_for(lambda: c.pump(0.2) is not None and r.status, what="answer")
        assert r.status == 502 and b"switch protocols" in r.body  # a 200 would tell the client the tunnel is open
    finally:
        c.close()


# -- 100 MiB each way, memory bounded ---------------------------------------------------------------
@pytest.fixture
def engine_proc(tmp_path, backend_a, ports, pki):
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki)
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"table": table.to_dict(), "settings": {}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("builtin_engine_proc.py")), str(config)],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, ports[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _curl(port: int, pki, *args: str) -> str:
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(pki.ca_file), "--resolve",
                          f"alpha.localhost:{port}:{LOCAL}", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_100mib_download_and_upload_streamed_with_bounded_memory(engine_proc, pki, tmp_path):
    proc, port = engine_proc
    size = 100 * MiB
    watcher = RssWatcher(proc.pid)
    try:
        got = _curl(port, pki, "-o", "/dev/null", "-w", "%{http_version} %{size_download}",
                    f"https://alpha.localhost:{port}/download/{size}")
        assert got == f"2 {size}"
        blob = tmp_path / "up.bin"
        with open(blob, "wb") as f:
            f.truncate(size)
        got = _curl(port, pki, "-T", str(blob), f"https://alpha.localhost:{port}/upload?stall=1")
        assert json.loads(got) == {"received": size}
    finally:
        growth = watcher.stop()
    print(f"RSS growth {growth / MiB:.1f} MiB")
    assert growth < 64 * MiB, f"proxy RSS grew by {growth / MiB:.1f} MiB"


def test_slow_reader_backpressure_reaches_the_backend(h2proxy, pki):
    """A client that stops acknowledging: the proxy holds at most a window plus a bounded queue."""
    eng, port = h2proxy
    c = client(port, pki)
    try:
        c.auto_ack = False
        sid = c.start("GET", f"/download/{64 * MiB}")
        r = c.responses[sid]
        wait_for(lambda: c.pump(0.2) is not None and len(r.body) >= 65535 - 16384, what="first window")

        def queued() -> int:
            total = 0
            for conn in list(eng.engine.st.conns):
                for s in getattr(conn, "streams", {}).values():
                    total += s.pending_size
            return total

        wait_for(lambda: eng.in_loop(queued) > 0, what="data queued behind the window")
        first = eng.in_loop(queued)
        c.pump(1.0)
        assert eng.in_loop(queued) <= max(first, 0) + 2 * MiB  # the backend was paused, not buffered
        c.auto_ack = True
        c.conn.acknowledge_received_data(len(r.body), sid)
        c.conn.increment_flow_control_window(len(r.body))
        c.flush()
        c.wait(sid, timeout=120)
        assert len(r.body) == 64 * MiB
    finally:
        c.close()


def test_other_connections_unaffected_by_a_stalled_one(h2proxy, pki):
    _, port = h2proxy
    stalled = client(port, pki, settings={4: 0})  # SETTINGS_INITIAL_WINDOW_SIZE = 0: never any DATA
    results: list[int] = []
    try:
        stalled.start("GET", f"/download/{8 * MiB}")
        stalled.pump(0.5)

        def good() -> None:
            c = client(port, pki)
            try:
                results.extend(c.request("GET", f"/g/{i}").status for i in range(20))
            finally:
                c.close()

        threads = [threading.Thread(target=good) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * 60
    finally:
        stalled.close()


def test_stop_sends_goaway(engine_factory, backend_a, ports, pki):
    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    c = client(ports[1], pki)
    try:
        assert c.request("GET", "/").status == 200
        eng.call(eng.engine.stop())
        eng.started = False
        closed = c.wait_closed()
        assert closed.goaway == 0
    finally:
        c.close()
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, ports[1]), timeout=2).close()



def test_host_header_modes_on_streams(engine_factory, backend_a, backend_b, ports, pki):
    """`host_header` holds on HTTP/2 streams too, towards HTTP/1.1 and HTTP/2 (`h2c://`) backends:
    the Host or `:authority` the backend sees, and X-Forwarded-Host keeping the client's."""
    h2c = H2cEchoServer()
    try:
        eng = engine_factory()
        eng.start(make_table([
            {"name": "alpha", "backends": [backend_a.url, backend_b.url], "host_header": "backend"},
            {"name": "beta", "backends": backend_a.url, "host_header": "API.example.test:9000"},
            # (names the test PKI has certificates for)
            {"name": "multi", "backends": h2c.url, "host_header": "backend"},
            {"name": "redir", "backends": h2c.url, "host_header": "rpc.example.test"},
            {"name": "down", "backends": h2c.url},
        ], *ports, pki))
        seen: dict[str, set[str]] = {"A": set(), "B": set()}
        c = client(ports[1], pki, "alpha")
        try:
            for _ in range(6):
                info = echo_json(bytes(c.request("GET", "/").body))
                seen[info["server"]].add(info["hdr"]["host"])
                assert info["hdr"]["x-forwarded-host"] == "alpha.localhost"
        finally:
            c.close()
        assert seen == {"A": {f"{LOCAL}:{backend_a.port}"}, "B": {f"{LOCAL}:{backend_b.port}"}}
        c = client(ports[1], pki, "beta")
        try:
            assert echo_json(bytes(c.request("GET", "/").body))["hdr"]["host"] == "api.example.test:9000"
        finally:
            c.close()
        for name, authority in (("multi", f"{LOCAL}:{h2c.port}"), ("redir", "rpc.example.test"),
                                ("down", "down.localhost")):
            c = client(ports[1], pki, name)
            try:
                r = c.request("GET", "/")
                assert r.status == 200
                fields = json.loads(bytes(r.body))["headers"]
                assert [v for k, v in fields if k == ":authority"] == [authority], (name, fields)
                assert [v for k, v in fields if k == "x-forwarded-host"] == [f"{name}.localhost"]
                assert not [k for k, _ in fields if k == "host"]
            finally:
                c.close()
    finally:
        h2c.close()
