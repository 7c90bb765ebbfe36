"""The Caddy engine with a real caddy: routing, TLS, pages, headers, placeholders, reloads, supervision."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time

import psutil
import pytest

from gotunnel_core.testing.engines import (  # noqa: F401  (fixtures)
    LOCAL, EchoHandler, EchoServer, backend_a, backend_b, echo_json, free_port, http_get, https_get, make_table, pki, ports,
)
from caddy_helpers import caddy_dir, caddy_factory, needs_caddy, wait_until  # noqa: F401
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.models import CertFiles, RouteTable
from gotunnel_core.supervisor import ProcessRuntime

pytestmark = needs_caddy


@pytest.fixture
def running(caddy_factory, backend_a, backend_b, ports, pki):
    tunnels = [
        {"name": "alpha", "backends": backend_a.url},
        {"name": "beta", "backends": backend_b.url},
        {"name": "*.wild", "backends": backend_b.url},
    ]
    eng = caddy_factory()
    eng.start(make_table(tunnels, *ports, pki))
    return eng, ports[0], ports[1]


def test_routes_by_host_sni_and_wildcard(running, pki):
    _, http_port, https_port = running
    for host, server in [("alpha.localhost", "A"), ("beta.localhost", "B"), ("ALPHA.Local:80", "A"),
                         ("beta.local.", "B"), (f"alpha.localhost:{http_port}", "A"), ("x.wild.localhost", "B")]:
        status, _, body = http_get(http_port, host)
        assert status == 200, host
        assert echo_json(body)["server"] == server, host
    assert http_get(http_port, "a.b.wild.localhost")[0] == 404
    assert http_get(http_port, "wild.localhost")[0] == 404
    status, _, body = https_get(https_port, pki, "beta.local")
    info = echo_json(body)
    assert status == 200 and info["server"] == "B" and info["hdr"]["x-forwarded-proto"] == "https"
    status, _, body = https_get(https_port, pki, "x.wild.localhost")
    assert status == 200 and echo_json(body)["server"] == "B"
    assert https_get(https_port, pki, "alpha.localhost", host="beta.localhost")[0] == 421
    # Another name of the same tunnel is no misdirection.
    assert https_get(https_port, pki, "alpha.localhost", host="alpha.local")[0] == 200


def test_unknown_sni_gets_default_certificate_and_404_listing(running, pki):
    _, _, https_port = running
    ctx = pki.client_context()
    ctx.check_hostname = False  # the default certificate names no tunnel
    with ctx.wrap_socket(socket.create_connection((LOCAL, https_port), timeout=5), server_hostname="nope.localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 404")
    assert b"alpha.localhost" in data and b"<code>nope.localhost</code>" in data


def test_forwarded_headers_append_and_are_never_taken_from_the_client(running):
    _, http_port, _ = running
    status, headers, body = http_get(http_port, "alpha.localhost", "/p?q=1", headers={
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "ftp",
        "X-Forwarded-Host": "evil.example",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "do not forward",
        "X-Normal": "kept",
    })
    info = echo_json(body)
    hdr = info["hdr"]
    assert status == 200 and info["path"] == "/p?q=1"
    assert hdr["host"] == "alpha.localhost"
    assert hdr["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert hdr["x-forwarded-proto"] == "http"
    assert hdr["x-forwarded-host"] == "alpha.localhost"
    assert hdr["x-normal"] == "kept" and "x-secret" not in hdr
    assert "via" not in hdr, hdr
    assert "via" not in headers, headers
    assert "accept-encoding" not in hdr  # the proxy asks for no compression of its own


def test_404_page_for_unknown_host(running):
    _, http_port, _ = running
    status, headers, body = http_get(http_port, "nope.localhost")
    page = body.decode()
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert "<code>nope.localhost</code>" in page
    assert f"http://alpha.localhost:{http_port}" in page and "*.wild" in page
    assert "body{font-family" in page  # the CSS braces survived Caddy's placeholder replacer
    # Go refuses Host values that could form markup before any route runs.
    assert http_get(http_port, "no<b>pe.localhost")[0] == 400


def test_502_page_and_503_when_every_backend_is_unhealthy(caddy_factory, ports):
    dead = f"http://127.0.0.1:{free_port()}"
    eng = caddy_factory()
    eng.start(make_table([
        {"name": "down", "backends": dead},
        {"name": "multi", "backends": [dead, f"http://127.0.0.1:{free_port()}"]},
    ], *ports))
    status, headers, body = http_get(ports[0], "down.localhost")
    assert status == 502 and headers["content-type"].startswith("text/html")
    assert dead in body.decode() and "<code>down</code>" in body.decode()
    assert http_get(ports[0], "down.localhost")[0] == 502  # a lone backend is never ejected
    status, _, body = http_get(ports[0], "multi.localhost")
    assert status == 502 and "127.0.0.1:" in body.decode() and "{http." not in body.decode()
    status, _, body = http_get(ports[0], "multi.localhost")  # both ejected by the passive check now
    assert status == 503 and "All backends of tunnel <code>multi</code> are unhealthy" in body.decode()


def test_redirect_https_header_rules_prefix_and_literal_braces(caddy_factory, backend_a, ports, pki):
    http_port, https_port = ports
    eng = caddy_factory()
    eng.start(make_table([
        {"name": "redir", "backends": backend_a.url, "redirect_https": True},
        {"name": "alpha", "backends": backend_a.url + "/api", "headers": {
            "request": {"add": {"X-Added": "1", "X-Replace": "new", "X-Env": "{env.HOME} \\{x}"}, "remove": ["X-Drop"]},
            "response": {"add": {"X-Resp": "{http.request.uri}"}, "remove": ["X-Remove-Me"]},
        }},
    ], *ports, pki))
    status, headers, _ = http_get(http_port, f"redir.localhost:{http_port}", "/a/b?c=d")
    assert status == 307 and headers["location"]  # temporary unless redirect_code = 308 (issue 19) == f"https://redir.localhost:{https_port}/a/b?c=d"
    assert https_get(https_port, pki, "redir.localhost")[0] == 200
    status, headers, body = http_get(http_port, "alpha.localhost", "/v1/x?y=1",
                                     headers={"X-Drop": "1", "X-Replace": "old", "X-Keep": "k"})
    info = echo_json(body)
    assert status == 200 and info["path"] == "/api/v1/x?y=1"
    assert info["hdr"]["x-added"] == "1" and info["hdr"]["x-replace"] == "new" and info["hdr"]["x-keep"] == "k"
    assert info["hdr"]["x-env"] == "{env.HOME} \\{x}"  # verbatim: no environment leaked
    assert "x-drop" not in info["hdr"]
    assert headers["x-resp"] == "{http.request.uri}" and "x-remove-me" not in headers


class _HealthHandler(EchoHandler):
    """/health answers with the server's `health` status (200 or 503)."""

    def _handle(self) -> None:
        if self.path == "/health":
            self.server.record(self, self.client_address)
            self.send_response(self.server.health)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super()._handle()

    do_GET = _handle


def test_weights_and_active_health_checks(caddy_factory, ports):
    good, sick = EchoServer("good", handler=_HealthHandler), EchoServer("sick", handler=_HealthHandler)
    good.health = sick.health = 200
    other = EchoServer("other")
    try:
        eng = caddy_factory()
        eng.start(make_table([
            {"name": "w", "backends": [{"url": good.url, "weight": 3}, {"url": other.url, "weight": 1}]},
            {"name": "h", "backends": [good.url, sick.url],
             "health": {"path": "/health", "interval": 0.2, "timeout": 1, "unhealthy_threshold": 1}},
        ], *ports))
        seen = [echo_json(http_get(ports[0], "w.localhost")[2])["server"] for _ in range(40)]
        assert seen.count("good") == 30 and seen.count("other") == 10
        assert {echo_json(http_get(ports[0], "h.localhost")[2])["server"] for _ in range(10)} == {"good", "sick"}
        sick.health = 503
        time.sleep(1.0)  # a few check intervals: `sick` is marked down
        assert {echo_json(http_get(ports[0], "h.localhost")[2])["server"] for _ in range(10)} == {"good"}
        sick.health = 200
        time.sleep(1.0)  # two passes (healthy_threshold) bring it back
        assert {echo_json(http_get(ports[0], "h.localhost")[2])["server"] for _ in range(10)} == {"good", "sick"}
        assert any(r["path"] == "/health" for r in good.requests)
    finally:
        good.close(), sick.close(), other.close()


def test_websocket_survives_a_reload(caddy_factory, backend_a, ports):
    import asyncio

    import websockets

    ws_port = free_port()

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    loop = asyncio.new_event_loop()
    server_ready = threading.Event()
    done: list[asyncio.Future] = []

    async def serve():
        async with websockets.serve(echo, LOCAL, ws_port):
            done.append(loop.create_future())
            server_ready.set()
            await done[0]

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    server_ready.wait(5)
    eng = caddy_factory()
    table = [{"name": "ws", "backends": f"http://{LOCAL}:{ws_port}"}]
    eng.start(make_table(table, *ports))

    async def client():
        async with websockets.connect(f"ws://ws.localhost:{ports[0]}/chat", host=LOCAL, port=ports[0]) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            await asyncio.to_thread(eng.apply, make_table(table + [{"name": "alpha", "backends": backend_a.url}], *ports))
            await ws.send("after")
            assert await ws.recv() == "after"

    try:
        asyncio.run(client())
        assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "A"
    finally:
        loop.call_soon_threadsafe(done[0].set_result, None)
        thread.join(5)
        loop.close()


def test_admin_endpoint_is_a_unix_socket_only(running):
    eng, http_port, https_port = running
    proc = psutil.Process(eng.pid())
    tcp = {c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert tcp == {http_port, https_port}
    sock = eng.engine.admin_socket
    assert sock.is_socket() and str(sock).startswith(str(eng.work_dir))
    running_config = eng.call(eng.engine.running_config())
    assert running_config["admin"]["listen"] == "unix/" + str(sock)
    assert running_config["apps"]["http"]["servers"]["gotunnel_http"]["automatic_https"] == {"disable": True}
    # Caddy wrote nothing outside the work dir: its data and config dirs point into it.
    assert (eng.work_dir / "home").is_dir() or (eng.work_dir / "data").is_dir()


def test_apply_identical_table_is_reapplied_and_changes_take_effect(running, backend_a, backend_b, ports, pki):
    eng, http_port, _ = running
    table = make_table([{"name": "alpha", "backends": backend_b.url}], *ports, pki)
    eng.apply(table)
    eng.apply(table)  # identical config: still loaded (must-revalidate), still serving
    assert echo_json(http_get(http_port, "alpha.localhost")[2])["server"] == "B"
    assert http_get(http_port, "beta.localhost")[0] == 404
    eng.apply(make_table([], *ports))
    assert http_get(http_port, "alpha.localhost")[0] == 404


def test_rejected_config_keeps_the_running_one(running, ports, pki, tmp_path, backend_a):
    eng, http_port, _ = running
    generation = eng.engine.work.current_generation()
    bad_cert = tmp_path / "bad.pem"
    bad_cert.write_text("not a certificate\n")
    good = make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki)
    bad = RouteTable(good.listen, good.tunnels, {"alpha": CertFiles(str(bad_cert), str(bad_cert))}, good.default_cert)
    with pytest.raises(EngineValidationError, match="caddy refused the configuration"):
        eng.apply(bad)
    assert eng.engine.work.current_generation() == generation
    assert echo_json(http_get(http_port, "beta.localhost")[2])["server"] == "B"
    with pytest.raises(EngineValidationError, match="mixes http and https"):
        eng.apply(make_table([{"name": "x", "backends": ["http://127.0.0.1:1", "https://127.0.0.1:2"]}], *ports))
    assert echo_json(http_get(http_port, "beta.localhost")[2])["server"] == "B"


def test_crash_is_restarted_with_the_current_table(caddy_factory, backend_a, ports):
    eng = caddy_factory({"engines": {"caddy": {"backoff": 0.1}}})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    first = eng.pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: eng.pid() not in (None, first) and eng.engine.health().running, 20, what="restart")
    wait_until(lambda: http_get(ports[0], "alpha.localhost")[0] == 200, 10, what="serving again")
    assert eng.engine.health().extra["restarts"] == 1


_ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from gotunnel_core.engine import EngineContext
from gotunnel_core.models import Listen, RouteTable, Tunnel
from gotunnel_caddy.engine import CaddyEngine

async def main():
    engine = CaddyEngine(EngineContext(work_dir=Path(sys.argv[1]), settings={}))
    tunnel = Tunnel.from_raw({"name": "alpha", "backends": sys.argv[4]})
    await engine.start(RouteTable(Listen("127.0.0.1", int(sys.argv[2]), int(sys.argv[3])), (tunnel,)))
    print("CADDY-PID", engine.process.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_orphan_of_a_killed_daemon_is_stopped_and_graceful_stop(caddy_factory, caddy_dir, backend_a, ports):
    import subprocess
    import sys

    work = caddy_dir / "shared"
    daemon = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(work), str(ports[0]), str(ports[1]),
                               backend_a.url], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = ""
        while not line.startswith("CADDY-PID"):
            line = daemon.stdout.readline()
            assert line, "the engine did not start"
        orphan = int(line.split()[1])
    finally:
        daemon.kill()  # the daemon dies by SIGKILL: its caddy lives on, holding the ports
        daemon.wait(10)
        daemon.stdout.close()
    assert psutil.pid_exists(orphan) and http_get(ports[0], "alpha.localhost")[0] == 200
    second = caddy_factory(work_dir=work)
    second.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    assert not psutil.pid_exists(orphan)
    assert second.pid() != orphan and http_get(ports[0], "alpha.localhost")[0] == 200
    pid = second.pid()
    second.call(second.engine.stop())
    assert not psutil.pid_exists(pid)
    assert not (work / "supervisor.json").exists()
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, ports[0]), timeout=1).close()


def test_render_and_engines_report(caddy_factory, ports, backend_a):
    eng = caddy_factory()
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports)
    files = eng.engine.render(table)
    config = json.loads(files["caddy.json"])
    assert config["admin"]["listen"] == "unix/" + str(eng.engine.admin_socket)
    assert "Caddyfile" in eng.engine.render_format(table, "caddyfile")
    status = type(eng.engine).probe({})
    assert status.found and status.version and status.version.startswith("v2.")


class _SseHandler(EchoHandler):
    """/events streams ten server-sent events, 0.3 s apart."""

    def _handle(self) -> None:
        if self.path != "/events":
            return super()._handle()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.close_connection = True
        for i in range(10):
            self.wfile.write(f"data: {i}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.3)

    do_GET = _handle


def test_sse_streams_unbuffered_and_survives_a_reload(caddy_factory, backend_a, ports):
    sse = EchoServer("sse", handler=_SseHandler)
    try:
        eng = caddy_factory()
        table = [{"name": "sse", "backends": sse.url}]
        eng.start(make_table(table, *ports))
        conn = http.client.HTTPConnection(LOCAL, ports[0], timeout=10)
        conn.request("GET", "/events", headers={"Host": "sse.localhost"})
        resp = conn.getresponse()
        assert resp.status == 200
        started = time.monotonic()
        assert resp.readline() == b"data: 0\n"  # arrives at once, not buffered
        assert time.monotonic() - started < 0.3
        before = time.monotonic()
        eng.apply(make_table(table + [{"name": "alpha", "backends": backend_a.url}], *ports))
        reload_took = time.monotonic() - before
        rest = resp.read().decode()
        conn.close()
        assert [line for line in rest.splitlines() if line.startswith("data:")][-1] == "data: 9"
        assert reload_took < 2.0, reload_took  # the reload does not wait for the stream to end
    finally:
        sse.close()


def _listening_inodes(pid: int) -> set[int]:
    """Inodes of the listening TCP sockets process `pid` holds (from /proc/PID/fd and /proc/net/tcp*)."""
    listening: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    listening.add(int(fields[9]))
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    return held & listening


def test_caddy_accepts_on_the_daemons_sockets_across_reloads_and_restarts(caddy_factory, backend_a, ports, pki):
    eng = caddy_factory({"engines": {"caddy": {"backoff": 0.1}}})
    base = [{"name": "alpha", "backends": backend_a.url}]
    eng.start(make_table(base, *ports, pki))
    ours = {os.fstat(fd).st_ino for fd in eng.engine.inherited_fds()}
    assert len(ours) == 4 and _listening_inodes(eng.pid()) == ours  # two sides per port

    def served_fds() -> set[str]:
        running_config = eng.call(eng.engine.running_config())
        return {s["listen"][0] for s in running_config["apps"]["http"]["servers"].values()}

    first_side = served_fds()
    assert first_side == {f"fd/{fd}" for fd in eng.engine._listeners.port_fds().values()}
    eng.apply(make_table(base, *ports, pki))
    assert served_fds().isdisjoint(first_side)  # each change moves to the other side
    eng.apply(make_table(base, *ports, pki))
    assert served_fds() == first_side

    # Fresh connections during route changes: every one is answered. Caddy itself would reset the
    # ones queued on the socket it closes, and close unanswered those its old config accepted last.
    stop, failures, done = threading.Event(), [], [0]

    def hammer(https: bool) -> None:
        while not stop.is_set():
            try:
                if https:
                    status = https_get(ports[1], pki, "alpha.localhost")[0]
                else:
                    status = http_get(ports[0], "alpha.localhost", headers={"Connection": "close"})[0]
                if status != 200:
                    failures.append(status)
                done[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            extra = [{"name": "extra", "backends": backend_a.url}] if i % 2 == 0 else []
            eng.apply(make_table(base + extra, *ports, pki))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [] and done[0] > 100, failures[:5]
    assert _listening_inodes(eng.pid()) == ours  # never rebound

    first = eng.pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: eng.pid() not in (None, first) and eng.engine.health().running, 20, what="restart")
    assert _listening_inodes(eng.pid()) == ours  # the restarted caddy inherits the same sockets
    assert http_get(ports[0], "alpha.localhost")[0] == 200


class SocketlessRuntime(ProcessRuntime):
    """A process runtime that, like the docker runtime's container, cannot hand the program sockets."""

    passes_fds = False


def test_without_inherited_sockets_caddy_binds_its_own_ports(caddy_factory, backend_a, backend_b, ports, pki):
    """`Runtime.passes_fds` False (the docker runtime): the daemon binds nothing, Caddy listens on
    the ports itself (`:PORT`, never `fd/N`) and route changes are plain loads."""
    eng = caddy_factory(runtime=SocketlessRuntime())
    base = [{"name": "alpha", "backends": backend_a.url}]
    eng.start(make_table(base, *ports, pki))
    assert eng.engine.inherited_fds() == ()
    running_config = eng.call(eng.engine.running_config())
    listens = {s["listen"][0] for s in running_config["apps"]["http"]["servers"].values()}
    assert listens == {f"{LOCAL}:{ports[0]}", f"{LOCAL}:{ports[1]}"}
    held = _listening_inodes(eng.pid())
    assert len(held) >= 2 and not held & _listening_inodes(os.getpid())  # Caddy's own sockets, none of ours
    eng.apply(make_table(base + [{"name": "beta", "backends": backend_b.url}], *ports, pki))
    assert echo_json(http_get(ports[0], "beta.localhost")[2])["server"] == "B"
    assert https_get(ports[1], pki, "alpha.localhost")[0] == 200


def test_port_in_use_fails_start_before_caddy_runs(caddy_factory, backend_a, ports):
    from gotunnel_core.errors import RuntimeFailure

    taken = socket.socket()
    taken.bind((LOCAL, ports[1]))
    taken.listen(1)
    try:
        eng = caddy_factory()
        with pytest.raises(RuntimeFailure, match=rf"cannot listen on {LOCAL}:{ports[1]}: the port is already in use"):
            eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
        assert eng.pid() is None and eng.engine.inherited_fds() == ()
        assert not (eng.work_dir / "supervisor.json").exists()
        with pytest.raises(OSError):  # the HTTP port it did bind was released again
            socket.create_connection((LOCAL, ports[0]), timeout=1).close()
    finally:
        taken.close()


def test_a_failed_load_steers_new_connections_to_the_config_caddy_runs(caddy_factory, backend_a, ports, monkeypatch):
    from gotunnel_core.errors import RuntimeFailure

    eng = caddy_factory()
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports)
    eng.start(table)
    listeners = eng.engine._listeners
    serving = listeners.side

    async def refuse(body: bytes) -> None:
        raise EngineValidationError("caddy refused the configuration (HTTP 400): test")

    monkeypatch.setattr(eng.engine, "_post_load", refuse)
    with pytest.raises(EngineValidationError, match="test"):
        eng.apply(make_table([], *ports))
    assert listeners.side == serving
    # New connections reach the config that still runs (not the idle side, where they would hang).
    for _ in range(20):
        assert http_get(ports[0], "alpha.localhost", timeout=5)[0] == 200

    # A load that Caddy applied although the daemon saw it fail (say, a timeout): new connections
    # follow the config Caddy runs, on the other side.
    monkeypatch.undo()
    post_load = eng.engine._post_load

    async def applied_then_lost(body: bytes) -> None:
        await post_load(body)
        raise RuntimeFailure("caddy did not take the new configuration: timeout (test)")

    monkeypatch.setattr(eng.engine, "_post_load", applied_then_lost)
    with pytest.raises(RuntimeFailure, match="timeout"):
        eng.apply(make_table([{"name": "beta", "backends": backend_a.url}], *ports))
    assert listeners.side != serving
    for _ in range(20):
        assert http_get(ports[0], "beta.localhost", timeout=5)[0] == 200
