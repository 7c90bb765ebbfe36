"""The Envoy engine with a real Envoy, driven in-process: routing, TLS by SNI, forwarding, pages,
weights, health checks, header rules, websockets and SSE across reloads, rejected configs."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotunnel_core.testing.engines import (  # noqa: F401  (fixtures)
    LOCAL, EchoServer, LoopThread, backend_a, backend_b, echo_json, free_port, http_get, https_get, make_table, pki, ports, wait_for,
)
from envoy_helpers import needs_envoy
from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.models import CertFiles, RouteTable

pytestmark = needs_envoy


class EnvoyThread(LoopThread):
    """An EnvoyEngine on an event loop in a background thread; tests stay synchronous."""

    def __init__(self, work: Path, settings: dict[str, Any] | None = None) -> None:
        from gotunnel_envoy.engine import EnvoyEngine

        super().__init__(EnvoyEngine(EngineContext(work_dir=work, settings=settings or {})))

    def settle(self) -> None:
        # Let the exited process's pipes and transports close on their own loop.
        import gc

        self.call(asyncio.sleep(0.1))
        gc.collect()
        self.call(asyncio.sleep(0))


@pytest.fixture
def envoy(tmp_path: Path):
    made: list[EnvoyThread] = []

    def make(settings: dict[str, Any] | None = None) -> EnvoyThread:
        eng = EnvoyThread(tmp_path / f"envoy{len(made)}", settings)
        made.append(eng)
        return eng

    try:
        yield make
    finally:
        for eng in made:
            eng.close()


@pytest.fixture
def running(envoy, backend_a, backend_b, ports, pki):
    tunnels = [
        {"name": "alpha", "backends": backend_a.url},
        {"name": "beta", "backends": backend_b.url},
        {"name": "*.wild", "backends": backend_b.url},
    ]
    eng = envoy()
    eng.start(make_table(tunnels, *ports, pki))
    return eng, *ports


def test_routes_by_host_and_sni_with_one_label_wildcards(running, pki) -> None:
    _, http_port, https_port = running
    for host, server in [("alpha.localhost", "A"), ("beta.localhost", "B"), ("ALPHA.Local:80", "A"),
                         ("beta.local.", "B"), (f"alpha.localhost:{http_port}", "A"), ("x.wild.localhost", "B")]:
        status, _, body = http_get(http_port, host)
        assert status == 200 and echo_json(body)["server"] == server, host
    assert http_get(http_port, "a.b.wild.localhost")[0] == 404
    assert http_get(http_port, "wild.localhost")[0] == 404
    status, _, body = https_get(https_port, pki, "beta.local")
    assert status == 200 and echo_json(body)["server"] == "B" and echo_json(body)["hdr"]["x-forwarded-proto"] == "https"
    assert https_get(https_port, pki, "x.wild.localhost")[0] == 200
    # TLS chains share one route table: a Host naming another tunnel is served (builtin: 421).
    status, _, body = https_get(https_port, pki, "alpha.localhost", host="beta.localhost")
    assert status == 200 and echo_json(body)["server"] == "B"
    status, _, body = https_get(https_port, pki, "nope.localhost", verify=False)  # default certificate
    assert status == 404 and b"alpha.localhost" in body


def test_host_is_preserved_and_forwarded_headers_match_the_other_engines(running) -> None:
    _, http_port, _ = running
    status, _, body = http_get(http_port, f"alpha.localhost:{http_port}", "/p?q=1", headers={
        "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "ftp", "Connection": "keep-alive, X-Secret",
        "X-Secret": "do not forward", "Keep-Alive": "timeout=5", "TE": "trailers", "X-Normal": "kept"})
    info = echo_json(body)
    hdr = info["hdr"]
    assert status == 200 and info["path"] == "/p?q=1"
    assert hdr["host"] == f"alpha.localhost:{http_port}"
    assert hdr["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert hdr["x-forwarded-proto"] == "http"
    assert hdr["x-forwarded-host"] == f"alpha.localhost:{http_port}"
    assert hdr["x-normal"] == "kept"
    for gone in ("x-secret", "keep-alive", "te", "x-envoy-internal", "x-envoy-external-address", "x-request-id"):
        assert gone not in hdr, gone
    assert echo_json(http_get(http_port, "alpha.localhost")[2])["hdr"]["x-forwarded-for"] == "127.0.0.1"


def test_404_page_lists_tunnels_and_a_host_with_markup_never_reaches_a_page(running) -> None:
    _, http_port, _ = running
    status, headers, body = http_get(http_port, "nope.localhost")
    page = body.decode()
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert "<code>nope.localhost</code>" in page
    assert f"http://alpha.localhost:{http_port}" in page and "beta.local" in page and "*.wild" in page
    # Envoy's HTTP/1 parser refuses such a Host outright (400), before routing.
    status, _, body = http_get(http_port, "no<b>pe.localhost")
    assert status == 400 and b"<b>" not in body


def test_502_page_names_the_backend_and_the_tunnel(envoy, ports) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    eng = envoy()
    eng.start(make_table([{"name": "down", "backends": dead}], *ports))
    status, headers, body = http_get(ports[0], "down.localhost")
    assert status == 502 and headers["content-type"].startswith("text/html")
    assert dead in body.decode() and "<code>down</code>" in body.decode()
    assert http_get(ports[0], "down.localhost")[0] == 502  # a lone backend is never ejected


def test_weights_health_checks_and_503_when_every_backend_is_down(envoy, backend_a, backend_b, ports) -> None:
    eng = envoy()
    tunnel = {"name": "multi", "backends": [{"url": backend_a.url, "weight": 3}, {"url": backend_b.url, "weight": 1}],
              "health": {"path": "/health", "interval": 0.2, "timeout": 1, "healthy_threshold": 1, "unhealthy_threshold": 1}}
    eng.start(make_table([tunnel], *ports))
    counts = Counter(echo_json(http_get(ports[0], "multi.localhost")[2])["server"] for _ in range(40))
    assert counts["A"] == 30 and counts["B"] == 10, counts
    assert any(r["path"] == "/health" for r in backend_a.requests)
    backend_b.close()
    wait_for(lambda: all(echo_json(http_get(ports[0], "multi.localhost")[2])["server"] == "A" for _ in range(4)),
             timeout=10, what="B to be marked down")
    backend_a.close()
    status, _, body = wait_for(lambda: (r := http_get(ports[0], "multi.localhost"))[0] == 503 and r,
                               timeout=10, what="503 once every backend is down")
    assert "503" in body.decode() and backend_a.url in body.decode() and backend_b.url in body.decode()


def test_header_rules_path_prefix_and_percent_arrives_literally(envoy, backend_a, ports) -> None:
    eng = envoy()
    eng.start(make_table([{
        "name": "alpha",
        "backends": backend_a.url + "/api",
        "headers": {
            "request": {"add": {"X-Added": "1", "X-Replace": "new", "X-Pct": "100% %DOWNSTREAM_REMOTE_ADDRESS%",
                                "X-Empty": ""},
                        "remove": ["X-Drop"]},
            "response": {"add": {"X-Resp": "50%%"}, "remove": ["X-Remove-Me"]},
        },
    }], *ports))
    status, headers, body = http_get(ports[0], "alpha.localhost", "/v1/x", headers={
        "X-Drop": "1", "X-Replace": "old", "X-Keep": "k"})
    info = echo_json(body)
    assert status == 200 and info["path"] == "/api/v1/x"
    hdr = info["hdr"]
    assert hdr["x-added"] == "1" and hdr["x-replace"] == "new" and hdr["x-keep"] == "k" and "x-drop" not in hdr
    assert hdr["x-pct"] == "100% %DOWNSTREAM_REMOTE_ADDRESS%" and hdr["x-empty"] == ""
    assert [k for k, _ in info["headers"]].count("X-Replace") == 1  # names keep their case
    assert headers["x-resp"] == "50%%" and "x-remove-me" not in headers and headers["x-backend"] == "A"


def test_redirect_https_on_plain_http_only(envoy, backend_a, ports, pki) -> None:
    http_port, https_port = ports
    eng = envoy()
    eng.start(make_table([{"name": "redir", "backends": backend_a.url, "redirect_https": True}], *ports, pki))
    status, headers, _ = http_get(http_port, f"redir.localhost:{http_port}", "/a/b?c=d")
    assert status == 307 and headers["location"] == f"https://redir.localhost:{https_port}/a/b?c=d"  # 308 when asked
    assert https_get(https_port, pki, "redir.localhost")[0] == 200


class _StreamHandler(BaseHTTPRequestHandler):
    """SSE: three events 0.3 s apart."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(3):
            data = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(0.3)
        self.wfile.write(b"0\r\n\r\n")


def test_sse_streams_event_by_event(envoy, ports) -> None:
    server = ThreadingHTTPServer((LOCAL, 0), _StreamHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        eng = envoy()
        eng.start(make_table([{"name": "sse", "backends": f"http://{LOCAL}:{server.server_address[1]}"}], *ports))
        conn = http.client.HTTPConnection(LOCAL, ports[0], timeout=10)
        conn.request("GET", "/events", headers={"Host": "sse.localhost"})
        resp = conn.getresponse()
        started = time.monotonic()
        first = resp.readline()
        assert first == b"data: 0\n" and time.monotonic() - started < 0.25  # not buffered to the end
        assert b"data: 2" in resp.read()
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_websocket_stays_open_across_route_changes(envoy, backend_a, ports) -> None:
    import websockets.sync.client
    import websockets.sync.server

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(f"echo:{message}")

    server = websockets.sync.server.serve(echo, LOCAL, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ws_url = f"http://{LOCAL}:{server.socket.getsockname()[1]}"
        eng = envoy()
        eng.start(make_table([{"name": "ws", "backends": ws_url}], *ports))
        sock = socket.create_connection((LOCAL, ports[0]))
        with websockets.sync.client.connect("ws://ws.localhost/", sock=sock, open_timeout=10) as ws:
            ws.send("one")
            assert ws.recv(timeout=5) == "echo:one"
            eng.apply(make_table([{"name": "ws", "backends": ws_url}, {"name": "alpha", "backends": backend_a.url}], *ports))
            assert http_get(ports[0], "alpha.localhost")[0] == 200  # the new route serves
            ws.send("two")
            assert ws.recv(timeout=5) == "echo:two"  # and the upgraded connection was not cut
    finally:
        server.shutdown()


def test_apply_swaps_routes_and_a_rejected_config_keeps_the_running_one(envoy, backend_a, backend_b, ports, pki,
                                                                        tmp_path) -> None:
    eng = envoy()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    eng.apply(make_table([{"name": "alpha", "backends": backend_b.url}, {"name": "beta", "backends": backend_a.url}],
                         *ports, pki))
    assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "B"
    assert echo_json(http_get(ports[0], "beta.localhost")[2])["server"] == "A"
    generation = eng.engine.work.current_generation()
    broken = make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki)
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    broken = RouteTable(broken.listen, broken.tunnels,
                        {"alpha": CertFiles(str(tmp_path / "empty.pem"), str(tmp_path / "empty.pem"))}, broken.default_cert)
    with pytest.raises(EngineValidationError, match="envoy refused the configuration"):
        eng.apply(broken)
    assert eng.engine.work.current_generation() == generation
    assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "B"
    eng.apply(make_table([], *ports, pki))
    assert http_get(ports[0], "alpha.localhost")[0] == 404


def test_admin_listens_on_a_private_unix_socket_or_loopback(envoy, backend_a, ports, tmp_path) -> None:
    eng = envoy()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    sock = eng.engine.work.run / "admin.sock"
    assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o600
    assert eng.engine.health().extra["admin"] == f"unix:{sock}"
    # A state dir too deep for a socket path: loopback, on a port Envoy picks.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    far = EnvoyThread(deep)
    try:
        other = (free_port(), free_port())
        far.start(make_table([{"name": "alpha", "backends": backend_a.url}], *other))
        address = (far.engine.work.run / "admin.address").read_text().strip()
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        assert http_get(other[0], "alpha.localhost")[0] == 200
    finally:
        far.close()


def test_a_renewed_certificate_under_the_same_file_names_is_served(envoy, backend_a, ports, pki, tmp_path) -> None:
    import shutil
    import ssl

    from gotunnel_core.testing.engines import make_pki

    def served_cert() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection((LOCAL, ports[1]), timeout=5), server_hostname="alpha.localhost") as s:
            return s.getpeercert(binary_form=True)

    eng = envoy()
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki)
    eng.start(table)
    before = served_cert()
    fresh = make_pki(tmp_path / "fresh", ["alpha"])  # what a renewal writes over the same paths
    shutil.copy(fresh.certs["alpha"].cert, pki.certs["alpha"].cert)
    shutil.copy(fresh.certs["alpha"].key, pki.certs["alpha"].key)
    eng.apply(table)  # the daemon re-applies the same table after renewing
    after = wait_for(lambda: (c := served_cert()) != before and c, timeout=10, what="the renewed certificate")
    assert after == ssl.PEM_cert_to_DER_cert(Path(fresh.certs["alpha"].cert).read_text())


def test_a_taken_port_fails_the_start_at_once_instead_of_sharing_it(envoy, backend_a, ports) -> None:
    from gotunnel_core.errors import RuntimeFailure

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a stale Envoy would hold it
    holder.bind((LOCAL, ports[1]))
    holder.listen()
    try:
        eng = envoy()
        started = time.monotonic()
        with pytest.raises(RuntimeFailure, match="Address already in use|another program"):
            eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
        assert time.monotonic() - started < 10
        assert eng.engine.health().running is False
    finally:
        holder.close()


def test_clients_cannot_steer_envoy_with_control_headers(envoy, backend_a, ports) -> None:
    eng = envoy()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    status, _, _ = http_get(ports[0], "alpha.localhost", "/status/503", method="POST", body=b"x",
                            headers={"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3"})
    assert status == 503 and len(backend_a.requests) == 1  # no client-requested retries of a POST


def test_https_backend_with_a_self_signed_certificate(envoy, ports, pki) -> None:
    import ssl

    from gotunnel_core.testing.engines import EchoHandler

    class TlsEcho(ThreadingHTTPServer):
        daemon_threads = True

        def __init__(self) -> None:
            super().__init__((LOCAL, 0), EchoHandler)
            self.name, self.requests, self.lock = "TLS", [], threading.Lock()
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(pki.certs["alpha"].cert, pki.certs["alpha"].key)
            self.socket = ctx.wrap_socket(self.socket, server_side=True)

        def record(self, handler: Any, peer: Any) -> None:
            self.requests.append({"path": handler.path, "peer": peer})

    server = TlsEcho()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        eng = envoy()
        eng.start(make_table([{"name": "beta", "backends": f"https://localhost:{server.server_address[1]}/x",
                               "health": "/h"}], *ports))
        status, _, body = http_get(ports[0], "beta.localhost", "/y")
        info = echo_json(body)
        assert status == 200 and info["server"] == "TLS" and info["path"] == "/x/y"
        assert info["hdr"]["host"] == "beta.localhost"
        assert any(r["path"] == "/x/h" for r in server.requests)  # the health check, under the prefix
    finally:
        server.shutdown()
        server.server_close()


def test_many_tunnels_render_linearly_and_the_404_page_lists_them_all(envoy, backend_a, ports, pki) -> None:
    tunnels = [{"name": f"t{i:03d}", "backends": backend_a.url} for i in range(60)]
    eng = envoy()
    table = make_table(tunnels, *ports)
    table = RouteTable(table.listen, table.tunnels, {t.name: pki.certs["alpha"] for t in table.tunnels}, pki.default)
    eng.start(table)  # a 404 page over Envoy's 4 KiB direct-response cap still works
    status, _, body = http_get(ports[0], "nobody.localhost")
    assert status == 404 and len(body) > 4096 and b"t000.localhost" in body and b"t059.localhost" in body
    assert http_get(ports[0], "t059.localhost")[0] == 200
    files = eng.engine.render(table)
    assert sorted(f for f in files if f.startswith("rds/")) == [  # shared by all chains (a twin for LAN peers)
        "rds/http.json", "rds/http_lan.json", "rds/tls.json", "rds/tls_lan.json"]


@pytest.fixture(scope="module")
def shared_envoy(tmp_path_factory):
    backend = EchoServer("H")
    eng = EnvoyThread(tmp_path_factory.mktemp("envoy-shared"))
    ports = (free_port(), free_port())
    try:
        eng.start(make_table([{"name": "h", "backends": backend.url}], *ports))
        yield eng, backend, ports
    finally:
        eng.close()
        backend.close()


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(lambda s: s.strip(" "))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=st.one_of(_printable, st.sampled_from(["%", "%%", "100%", "%DOWNSTREAM_REMOTE_ADDRESS%", "%REQ(:path)%",
                                                    "%START_TIME%", "a%%b%c"])))
def test_hypothesis_header_values_arrive_literally(shared_envoy, value: str) -> None:
    eng, backend, ports = shared_envoy
    eng.apply(make_table([{"name": "h", "backends": backend.url,
                           "headers": {"request": {"add": {"X-V": value}}, "response": {"add": {"X-R": value}}}}], *ports))
    status, headers, body = http_get(ports[0], "h.localhost")
    assert status == 200
    assert echo_json(body)["hdr"]["x-v"] == value and headers["x-r"] == value
