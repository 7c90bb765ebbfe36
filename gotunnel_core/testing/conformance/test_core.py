"""The suite's core rows: routing, forwarded headers, pages, websockets, streaming, keep-alive,
redirects, header rules, balancing, health checks, reloads under load and refused configs.

Each row runs through the real CLI and daemon of the engine under test (`env`), with real backends
(`app`); see `gotunnel_core.testing.conformance` for how rows are registered and run.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from typing import Any, Iterator

from ..backends import WsEchoServer, connect, get, header_values, pattern, pattern_sha256
from ..runner import free_port
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures


@behaviour("routing", "Routing by Host and SNI (several tunnels, a wildcard)")
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


@behaviour("sni_host_mismatch", "HTTPS Host naming another tunnel than the TLS name: 421")
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


@behaviour("forwarded_headers", "Host preserved, X-Forwarded-For/-Proto/-Host")
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


@behaviour("not_found_page", "404 page listing the tunnels (HTTP and HTTPS)")
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


@behaviour("bad_gateway_page", "502 page naming the tunnel and backend")
def test_bad_gateway_page(env: Env) -> None:
    port = free_port()
    env.start("-d", "down", "-p", str(port))
    status, headers, body = env.get("down")
    assert status == 502 and headers["content-type"].startswith("text/html")
    assert b"down" in body and f"127.0.0.1:{port}".encode() in body


@behaviour("websocket", "WebSocket echo over HTTP and HTTPS, kept across a reload")
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


@behaviour("sse", "Server-sent events: first event before the stream ends")
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


@behaviour("upload_streaming", "100 MiB upload, streamed to the backend")
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


@behaviour("download_streaming", "100 MiB download, streamed")
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


@behaviour("keepalive", "Keep-alive reuse (client and upstream connections)")
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


@behaviour("http10", "HTTP/1.0 clients")
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


@behaviour("https_redirect", "HTTP to HTTPS redirect")
def test_https_redirect(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "secure", "-p", str(backend.port), "--redirect-https")
    status, headers, _ = env.get("secure", "/a/b?c=d")
    assert status in (301, 302, 307, 308)
    assert headers["location"] == f"https://secure.localhost:{env.g.https_port}/a/b?c=d"
    status, _, body = env.get("secure", "/a/b?c=d", https=True)
    assert status == 200 and body_json(body)["path"] == "/a/b?c=d"


@behaviour("plain_http_only", "A --no-https tunnel is not served on the HTTPS port")
def test_no_https_tunnel_is_not_served_over_https(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "plain", "-p", str(backend.port), "--no-https")
    assert env.get("plain")[0] == 200
    try:
        status = env.get("plain", https=True)[0]
    except ssl.SSLError:
        return  # no certificate for the name on the HTTPS port: not served either
    assert status == 404


@behaviour("header_rules", "Header rules (request/response add and remove)")
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


@behaviour("weights", "Weighted backends")
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


@behaviour("health_ejection", "Unhealthy backend ejected")
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


@behaviour("reload_under_load", "Route add/remove under load, no failed request")
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


@behaviour("bad_routes_refused", "Invalid tunnels refused, running config kept")
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


@behaviour("engine_validator", "Engine's own validator refuses a bad config (e.g. unresolvable backend)")
def test_engine_validator_refusal_keeps_running_config(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "keep", "-p", str(backend.port))
    result = env.g("start", "-d", "nohost", "--backend", "http://no-such-host.invalid:8080")
    assert result.code == 2 and "no-such-host.invalid" in result.err
    assert [t["name"] for t in env.g.json("list")["tunnels"]] == ["keep"]
    assert env.get("keep")[0] == 200 and env.get("nohost")[0] == 404
