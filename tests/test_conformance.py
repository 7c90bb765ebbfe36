"""Engine conformance suite: every installed engine runs the same behaviours through the real CLI
and daemon, with real backends and real sockets.

The table `CAPABILITIES` below is the one place that says what an engine cannot do (skipped,
with the reason), does differently (runs, noted) or does not do yet (xfail, strict: the day it
works the suite says so). README.md's engine matrix is generated from it and checked here
(`python tests/test_conformance.py --write-readme` rewrites it).

Engines are those of `ENGINES` that are installed (plugin importable and program found); an
engine named in GOTUNNEL_REQUIRE_ENGINES (CI sets builtin,nginx,caddy,envoy) fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import Gotunnel, free_port, wait_for
from conformance_backends import (AppServer, Client, WsEchoServer, connect, get, header_values, pattern,
                                  pattern_sha256)

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Gap:
    """How an engine departs from a behaviour: `unsupported` (skipped), `variant` (runs; noted),
    `pending` (expected to fail until the work lands: xfail strict)."""

    kind: str
    reason: str


#: behaviour id -> what the README matrix calls it. One test per behaviour below.
BEHAVIOURS: dict[str, str] = {
    "routing": "Routing by Host and SNI (several tunnels, a wildcard)",
    "sni_host_mismatch": "HTTPS Host naming another tunnel than the TLS name: 421",
    "forwarded_headers": "Host preserved, X-Forwarded-For/-Proto/-Host",
    "not_found_page": "404 page listing the tunnels (HTTP and HTTPS)",
    "bad_gateway_page": "502 page naming the tunnel and backend",
    "websocket": "WebSocket echo over HTTP and HTTPS, kept across a reload",
    "sse": "Server-sent events: first event before the stream ends",
    "upload_streaming": "100 MiB upload, streamed to the backend",
    "download_streaming": "100 MiB download, streamed",
    "keepalive": "Keep-alive reuse (client and upstream connections)",
    "http10": "HTTP/1.0 clients",
    "https_redirect": "HTTP to HTTPS redirect",
    "plain_http_only": "A --no-https tunnel is not served on the HTTPS port",
    "header_rules": "Header rules (request/response add and remove)",
    "weights": "Weighted backends",
    "health_ejection": "Unhealthy backend ejected",
    "reload_under_load": "Route add/remove under load, no failed request",
    "bad_routes_refused": "Invalid tunnels refused, running config kept",
    "engine_validator": "Engine's own validator refuses a bad config (e.g. unresolvable backend)",
}

ENGINES = ("builtin", "nginx", "caddy", "envoy")

PENDING_BUILTIN = "pending builtin engine work"

#: engine -> behaviour -> Gap. A behaviour not listed for an engine is fully supported.
CAPABILITIES: dict[str, dict[str, Gap]] = {
    "builtin": {
        "engine_validator": Gap("unsupported", "resolves backend names per connection: an unresolvable "
                                               "backend is accepted and answers 502"),
    },
    "nginx": {
        "health_ejection": Gap("variant", "passive only (max_fails/fail_timeout, failed requests retried "
                                          "on the next backend); active checks need nginx Plus"),
    },
    "caddy": {
        "engine_validator": Gap("unsupported", "resolves backend names per request, like builtin: `caddy validate` "
                                               "accepts an unresolvable backend, which answers 502"),
        "health_ejection": Gap("variant", "active checks count only 2xx as healthy (builtin: 2xx/3xx); a failed "
                                          "connection ejects a backend for the passive window"),
    },
    "envoy": {
        "sni_host_mismatch": Gap("unsupported", "every TLS filter chain shares one route table, so the Host's "
                                                "tunnel answers whatever the TLS name"),
        "engine_validator": Gap("unsupported", "Envoy resolves backend names at run time (STRICT_DNS clusters) and "
                                             "`envoy --mode validate` does not resolve them: an unresolvable backend "
                                             "is accepted and answers 503 until it resolves (other bad configs, e.g. an "
                                             "unreadable certificate, are refused)"),
    },
}


def _installed() -> dict[str, str | None]:
    """engine -> None when it can run here, else why not."""
    from gotunnel_core.engine import collect_engines
    from gotunnel_core.plugins import make_plugin_manager

    specs = collect_engines(make_plugin_manager().pm)
    result: dict[str, str | None] = {}
    for name in ENGINES:
        if name not in specs:
            result[name] = f"engine {name!r} is not installed"
            continue
        engine_class = specs[name].engine_class
        probe = getattr(engine_class, "probe_runtime", engine_class.probe)({"engine": name})
        result[name] = None if probe.found else f"engine {name!r}: {probe.hint}"
    return result


INSTALLED = _installed()
REQUIRED = {e.strip() for e in os.environ.get("GOTUNNEL_REQUIRE_ENGINES", "").split(",") if e.strip()}


def behaviour(name: str) -> Any:
    assert name in BEHAVIOURS, name
    return pytest.mark.behaviour(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `engine` over ENGINES with the capability table's marks."""
    if "engine" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("behaviour")
    assert marker is not None, f"{metafunc.function.__name__} needs @behaviour(...)"
    params = []
    for name in ENGINES:
        marks: list[Any] = []
        missing = INSTALLED[name]
        gap = CAPABILITIES.get(name, {}).get(marker.args[0])
        if missing and name not in REQUIRED:
            marks.append(pytest.mark.skip(reason=missing))
        elif gap is not None and gap.kind == "unsupported":
            marks.append(pytest.mark.skip(reason=f"{name} does not support this: {gap.reason}"))
        elif gap is not None and gap.kind == "pending":
            marks.append(pytest.mark.xfail(strict=True, reason=gap.reason))
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("engine", params)


# ----- fixtures --------------------------------------------------------------------------------

@dataclass
class Env:
    g: Gotunnel
    engine: str
    _ca: str | None = None

    @property
    def ca(self) -> str:
        if self._ca is None:
            self._ca = self.g("cert", "ca", "--path", check=True).out.strip()
        return self._ca

    def start(self, *args: str) -> Any:
        return self.g("start", *args, check=True)

    def url_host(self, name: str, https: bool = False) -> str:
        return f"{name}.localhost:{self.g.https_port if https else self.g.http_port}"

    def get(self, name: str, path: str = "/", https: bool = False, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        port = self.g.https_port if https else self.g.http_port
        return get(port, self.url_host(name, https), path, ca=self.ca if https else None, **kw)

    def client(self, name: str, https: bool = False) -> Client:
        port = self.g.https_port if https else self.g.http_port
        return Client(port, self.url_host(name, https), self.ca if https else None)

    def write_config(self, text: str) -> None:
        (self.g.state_dir.parent / "gotunnel.toml").write_text(text)


@pytest.fixture
def env(engine: str, gotunnel: Gotunnel) -> Env:
    if INSTALLED[engine]:
        pytest.fail(f"{engine} is required here (GOTUNNEL_REQUIRE_ENGINES) but: {INSTALLED[engine]}")
    gotunnel.env["GOTUNNEL_ENGINE"] = engine
    return Env(gotunnel, engine)


@pytest.fixture
def app() -> Iterator[Any]:
    servers: list[Any] = []

    def make(name: str = "app") -> AppServer:
        server = AppServer(name)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def body_json(body: bytes) -> dict[str, Any]:
    return json.loads(body)


# ----- behaviours ------------------------------------------------------------------------------

@behaviour("routing")
def test_routing_by_host_and_sni(env: Env, app: Any) -> None:
    one, two, wild = app("one"), app("two"), app("wild")
    env.start("-d", "one", "-p", str(one.port))
    env.start("-d", "two", "--backend", two.url)
    env.start("-d", "*.preview", "-p", str(wild.port))
    for https in (False, True):
        for host, expected in (("one", "one"), ("two", "two"), ("feature-x.preview", "wild"), ("b2.preview", "wild")):
            status, _, body = env.get(host, "/p?q=1", https=https)
            assert status == 200, (host, https, body[:200])
            assert body_json(body)["server"] == expected and body_json(body)["path"] == "/p?q=1"
        # `.local` names too, with the certificate verified for that name
        port = env.g.https_port if https else env.g.http_port
        status, _, body = get(port, "one.local", "/", ca=env.ca if https else None)
        assert status == 200 and body_json(body)["server"] == "one"
    assert env.get("preview")[0] == 404  # the wildcard covers neither its base name
    assert env.get("a.b.preview")[0] == 404  # nor two labels (a wildcard certificate would not either)


@behaviour("sni_host_mismatch")
def test_host_naming_another_tunnel_than_sni_is_misdirected(env: Env, app: Any) -> None:
    import http.client

    one, two = app("one"), app("two")
    env.start("-d", "one", "-p", str(one.port))
    env.start("-d", "two", "-p", str(two.port))
    hits = two.hits
    for host in (env.url_host("two", True), "two.local"):
        conn = http.client.HTTPConnection("127.0.0.1", env.g.https_port, timeout=15)
        conn.sock = connect(env.g.https_port, "one.localhost", env.ca)  # TLS for `one`, verified
        try:
            conn.request("GET", "/", headers={"Host": host})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        assert response.status == 421, host
    assert two.hits == hits  # never reached the other tunnel's backend
    status, _, body = get(env.g.https_port, env.url_host("one", True), "/", ca=env.ca)
    assert status == 200 and body_json(body)["server"] == "one"


@behaviour("forwarded_headers")
def test_host_and_forwarded_headers(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "fwd", "-p", str(backend.port))
    for https in (False, True):
        status, _, body = env.get("fwd", "/h", https=https, headers={"X-Forwarded-For": "203.0.113.9"})
        echo = body_json(body)
        host = env.url_host("fwd", https)
        assert status == 200
        assert header_values(echo, "Host") == [host]
        assert header_values(echo, "X-Forwarded-Host") == [host]
        assert header_values(echo, "X-Forwarded-Proto") == ["https" if https else "http"]
        assert header_values(echo, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]


@behaviour("not_found_page")
def test_not_found_page_lists_tunnels(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "alpha", "-p", str(backend.port))
    env.start("-d", "beta", "-p", str(backend.port))
    status, headers, body = env.get("nobody")
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert b"alpha.localhost" in body and b"beta.localhost" in body
    assert b"<code>nobody.localhost" in body  # names the host asked for (with or without port)
    status, _, body = get(env.g.http_port, "<script>x</script>.localhost")
    assert status in (400, 404) and b"<script>" not in body  # never echoed unescaped
    # HTTPS for an unknown name: the default certificate (chain verified), then the same page
    ctx = ssl.create_default_context(cafile=env.ca)
    ctx.check_hostname = False
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", env.g.https_port), timeout=10),
                           server_hostname="nobody.localhost")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 404") and b"alpha.localhost" in data


@behaviour("bad_gateway_page")
def test_bad_gateway_page(env: Env) -> None:
    port = free_port()
    env.start("-d", "down", "-p", str(port))
    status, headers, body = env.get("down")
    assert status == 502 and headers["content-type"].startswith("text/html")
    assert b"down" in body and f"127.0.0.1:{port}".encode() in body


@behaviour("websocket")
def test_websocket_echo_over_http_and_https(env: Env, app: Any) -> None:
    from websockets.sync.client import connect as ws_connect

    server = WsEchoServer()
    try:
        env.start("-d", "ws", "--backend", server.url)
        sockets = []
        for https in (False, True):
            port = env.g.https_port if https else env.g.http_port
            scheme = "wss" if https else "ws"
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            kwargs: dict[str, Any] = {"sock": raw, "open_timeout": 10}
            if https:
                kwargs["ssl"] = ssl.create_default_context(cafile=env.ca)
            ws = ws_connect(f"{scheme}://ws.localhost:{port}/chat", **kwargs).__enter__()
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(b"\x00\x01binary")
            assert ws.recv(timeout=10) == b"\x00\x01binary"
            sockets.append(ws)
        env.start("-d", "other", "-p", str(app().port))  # a reload must not cut open websockets
        for ws in sockets:
            ws.send("still there")
            assert ws.recv(timeout=10) == "still there"
            ws.close()
    finally:
        server.close()


@behaviour("sse")
def test_server_sent_events_arrive_unbuffered(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "sse", "-p", str(backend.port))
    for https in (False, True):
        sock = connect(env.g.https_port if https else env.g.http_port, "sse.localhost", env.ca if https else None)
        sock.sendall(f"GET /sse HTTP/1.1\r\nHost: {env.url_host('sse', https)}\r\nAccept: text/event-stream\r\n\r\n".encode())
        started = time.monotonic()
        data = b""
        while b"data: first" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        first = time.monotonic() - started
        assert first < 1.2, f"first event after {first:.2f} s: buffered"
        while b"data: second" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert time.monotonic() - started >= 1.4
        sock.close()


MIB100 = 100 * 1024 * 1024


@behaviour("upload_streaming")
def test_upload_100mib_streamed(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "up", "-p", str(backend.port))
    client = env.client("up")
    last_sent = [0.0]

    def body() -> Iterator[bytes]:
        for part in pattern(MIB100):
            yield part
        last_sent[0] = time.time()

    status, _, data = client.request("POST", "/upload", body=body())  # no length: http.client sends it chunked
    client.close()
    result = body_json(data)
    assert status == 200 and result["bytes"] == MIB100 and result["sha256"] == pattern_sha256(MIB100)
    # Streamed: the backend had the first bytes long before the client sent the last ones.
    assert result["first_byte_at"] < last_sent[0] - 0.01


@behaviour("download_streaming")
def test_download_100mib_streamed(env: Env, app: Any) -> None:
    import hashlib

    backend = app()
    env.start("-d", "down", "-p", str(backend.port))
    for https in (False, True):
        client = env.client("down", https=https)
        assert client.conn is None
        conn = client._open()
        conn.request("GET", f"/download/{MIB100}", headers={"Host": env.url_host("down", https)})
        response = conn.getresponse()
        assert response.status == 200
        digest, total = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
        conn.close()
        assert total == MIB100 and digest.hexdigest() == pattern_sha256(MIB100)


@behaviour("keepalive")
def test_keepalive_reuse(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "ka", "-p", str(backend.port))
    for https in (False, True):
        client = env.client("ka", https=https)
        ports = []
        for _ in range(5):
            status, _, body = client.request("GET", "/ka")
            assert status == 200
            ports.append(body_json(body)["peer_port"])
        assert client.connections == 1  # one client connection for all five
        assert len(set(ports[1:])) == 1  # and the proxy reused its upstream connection
        client.close()


@behaviour("http10")
def test_http10_client(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "old", "-p", str(backend.port))
    sock = connect(env.g.http_port, None, None)
    sock.sendall(f"GET /ten HTTP/1.0\r\nHost: {env.url_host('old')}\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):  # the proxy closes: HTTP/1.0 without keep-alive
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200", head)
    assert body_json(body)["path"] == "/ten"


@behaviour("https_redirect")
def test_https_redirect(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "secure", "-p", str(backend.port), "--redirect-https")
    status, headers, _ = env.get("secure", "/a/b?c=d")
    assert status in (301, 302, 307, 308)
    assert headers["location"] == f"https://secure.localhost:{env.g.https_port}/a/b?c=d"
    status, _, body = env.get("secure", "/a/b?c=d", https=True)
    assert status == 200 and body_json(body)["path"] == "/a/b?c=d"


@behaviour("plain_http_only")
def test_no_https_tunnel_is_not_served_over_https(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "plain", "-p", str(backend.port), "--no-https")
    assert env.get("plain")[0] == 200
    try:
        status = env.get("plain", https=True)[0]
    except ssl.SSLError:
        return  # no certificate for the name on the HTTPS port: not served either
    assert status == 404


@behaviour("header_rules")
def test_header_rules(env: Env, app: Any) -> None:
    backend = app()
    tricky = 'dev "quoted" $host \\back; {braces} #hash \'single\''
    env.write_config(f"""
[[tunnels]]
name = "hdr"
backends = ["{backend.url}"]
headers.request.add = {{ "X-Env" = {json.dumps(tricky)} }}
headers.request.remove = ["X-Drop"]
headers.response.add = {{ "X-Frame-Options" = "DENY", "X-Backend" = "replaced" }}
headers.response.remove = ["X-Remove-Me"]
""")
    env.start()
    for https in (False, True):
        status, headers, body = env.get("hdr", "/", https=https, headers={"X-Drop": "1", "X-Keep": "2"})
        echo = body_json(body)
        assert status == 200
        assert header_values(echo, "X-Env") == [tricky]  # verbatim: no quoting or variable leaks
        assert header_values(echo, "X-Drop") == [] and header_values(echo, "X-Keep") == ["2"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-backend"] == "replaced"
        assert "x-remove-me" not in headers


@behaviour("weights")
def test_weights(env: Env, app: Any) -> None:
    heavy, light = app("heavy"), app("light")
    env.start("-d", "w", "--backend", f"{heavy.url},weight=3", "--backend", f"{light.url},weight=1")
    client = env.client("w")
    counts = {"heavy": 0, "light": 0}
    for _ in range(200):
        status, _, body = client.request("GET", "/")
        assert status == 200
        counts[body_json(body)["server"]] += 1
    client.close()
    share = counts["heavy"] / 200
    assert 0.68 <= share <= 0.82, counts


@behaviour("health_ejection")
def test_unhealthy_backend_is_ejected(env: Env, app: Any) -> None:
    good, bad = app("good"), app("bad")
    env.write_config(f"""
[[tunnels]]
name = "hc"
backends = ["{good.url}", "{bad.url}"]
health = {{ path = "/health", interval = 0.2, timeout = 0.5, healthy_threshold = 1, unhealthy_threshold = 1 }}
""")
    env.start()
    seen = {body_json(env.get("hc")[2])["server"] for _ in range(6)}
    assert seen == {"good", "bad"}
    bad.close()
    time.sleep(1.0)
    results = [env.get("hc") for _ in range(20)]
    assert [r[0] for r in results] == [200] * 20
    assert {body_json(r[2])["server"] for r in results} == {"good"}


@behaviour("reload_under_load")
def test_route_changes_under_concurrent_load(env: Env, app: Any) -> None:
    backend, other = app("load"), app("other")
    env.start("-d", "load", "-p", str(backend.port))
    stop = threading.Event()
    failures: list[str] = []
    done = [0]
    lock = threading.Lock()

    def hammer(https: bool) -> None:
        client = env.client("load", https=https)
        while not stop.is_set():
            try:
                status, _, body = client.request("GET", "/load", retry_reused=True)
                if status != 200 or body_json(body)["server"] != "load":
                    failures.append(f"status {status}")
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{type(exc).__name__}: {exc}")
                client.close()
            with lock:
                done[0] += 1
        client.close()

    threads = [threading.Thread(target=hammer, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            env.start("-d", f"extra{i}", "-p", str(other.port))
            assert env.get(f"extra{i}")[0] == 200
            env.g("stop", f"extra{i}", check=True)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert done[0] > 50


@behaviour("bad_routes_refused")
def test_bad_routes_are_refused_and_the_running_config_stays(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "keep", "-p", str(backend.port))
    for args in (["-d", "a;b", "-p", "3000"], ["-d", "x", "--backend", "http://127.0.0.1:99999"],
                 ["-d", "x", "--backend", 'http://127.0.0.1:3000/"}'], ["-d", "x\nserver", "-p", "3000"]):
        result = env.g("start", *args)
        assert result.code == 2 and result.err.startswith("error: invalid"), (args, result.err)
    env.write_config('[[tunnels]]\nname = "hx"\nbackends = ["http://127.0.0.1:3000"]\n'
                     'headers.request.add = { "X-A" = "line\\nbreak" }\n')
    result = env.g("start")
    assert result.code == 2 and "header value" in result.err
    assert [t["name"] for t in env.g.json("list")["tunnels"]] == ["keep"]
    assert env.get("keep")[0] == 200


@behaviour("engine_validator")
def test_engine_validator_refusal_keeps_running_config(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "keep", "-p", str(backend.port))
    result = env.g("start", "-d", "nohost", "--backend", "http://no-such-host.invalid:8080")
    assert result.code == 2 and "no-such-host.invalid" in result.err
    assert [t["name"] for t in env.g.json("list")["tunnels"]] == ["keep"]
    assert env.get("keep")[0] == 200 and env.get("nohost")[0] == 404


# ----- the README's engine matrix ----------------------------------------------------------------

MATRIX_BEGIN = "<!-- engine-matrix:begin (generated from tests/test_conformance.py) -->"
MATRIX_END = "<!-- engine-matrix:end -->"
_LABELS = {"unsupported": "no", "variant": "yes*", "pending": "pending"}


def matrix_markdown() -> str:
    engines = list(CAPABILITIES)
    lines = ["| behaviour | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    notes: list[str] = []
    for key, title in BEHAVIOURS.items():
        cells = []
        for engine in engines:
            gap = CAPABILITIES[engine].get(key)
            if gap is None:
                cells.append("yes")
                continue
            notes.append(f"{engine}, {title.lower()}: {gap.reason}")
            cells.append(f"{_LABELS[gap.kind]} [{len(notes)}]")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("yes\\*: works, differently (see the note); no: not supported (skipped by the suite); "
                 "pending: not done yet (an expected failure until it is).  ")
    lines += [f"[{i}] {note}  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def readme_matrix(text: str) -> str | None:
    start, end = text.find(MATRIX_BEGIN), text.find(MATRIX_END)
    if start < 0 or end < start:
        return None
    return text[start + len(MATRIX_BEGIN):end].strip("\n") + "\n"


def test_readme_engine_matrix_matches_the_capability_table() -> None:
    current = readme_matrix(README.read_text())
    assert current is not None, f"README.md lacks the {MATRIX_BEGIN} ... {MATRIX_END} section"
    assert current == matrix_markdown(), "README's engine matrix is stale: run python tests/test_conformance.py --write-readme"


def test_capability_table_names_known_engines_and_behaviours() -> None:
    for engine, gaps in CAPABILITIES.items():
        assert engine in ENGINES
        for key, gap in gaps.items():
            assert key in BEHAVIOURS and gap.kind in _LABELS and gap.reason
    tested = {m.args[0] for name, fn in globals().items() if name.startswith("test_")
              for m in getattr(fn, "pytestmark", []) if m.name == "behaviour"}
    assert tested == set(BEHAVIOURS)


if __name__ == "__main__" and "--write-readme" in sys.argv:
    text = README.read_text()
    start, end = text.find(MATRIX_BEGIN), text.find(MATRIX_END)
    text = text[:start + len(MATRIX_BEGIN)] + "\n" + matrix_markdown() + text[end:]
    README.write_text(text)
    print("README.md engine matrix updated")
