"""Phase 1 behaviour of the builtin engine over real sockets: routing, TLS/SNI, forwarding, pages."""

from __future__ import annotations

import http.client
import json
import socket

import pluggy
import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, EchoServer, backend_a, backend_b, echo_json, engine_factory, free_port, http_get, https_get, make_table, pki, ports,
    raw_exchange,
)
from gotunnel_core import hookspecs
from gotunnel_core.http import HookResponse


@pytest.fixture
def running(engine_factory, backend_a, backend_b, ports, pki):
    http_port, https_port = ports
    tunnels = [
        {"name": "alpha", "backends": backend_a.url},
        {"name": "beta", "backends": backend_b.url},
        {"name": "*.wild", "backends": backend_b.url},
    ]
    eng = engine_factory()
    eng.start(make_table(tunnels, http_port, https_port, pki))
    return eng, http_port, https_port


def test_render_is_pure_json_of_the_table(engine_factory, ports, backend_a):
    eng = engine_factory()
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports)
    files = eng.engine.render(table)
    assert json.loads(files["routes.json"]) == json.loads(json.dumps(table.to_dict()))


def test_routes_two_tunnels_by_host_over_http(running):
    _, http_port, _ = running
    for host, server in [("alpha.localhost", "A"), ("beta.localhost", "B"), ("ALPHA.Local:80", "A"),
                         ("beta.local.", "B"), (f"alpha.localhost:{http_port}", "A")]:
        status, _, body = http_get(http_port, host)
        assert status == 200, host
        assert echo_json(body)["server"] == server, host


def test_wildcard_matches_one_label(running):
    _, http_port, _ = running
    status, _, body = http_get(http_port, "x.wild.localhost")
    assert status == 200 and echo_json(body)["server"] == "B"
    assert http_get(http_port, "a.b.wild.localhost")[0] == 404
    assert http_get(http_port, "wild.localhost")[0] == 404


def test_routes_by_sni_over_https_with_trusted_certificates(running, pki):
    _, _, https_port = running
    status, _, body = https_get(https_port, pki, "alpha.localhost")
    assert status == 200 and echo_json(body)["server"] == "A"
    status, _, body = https_get(https_port, pki, "beta.local")
    info = echo_json(body)
    assert status == 200 and info["server"] == "B"
    assert info["hdr"]["x-forwarded-proto"] == "https"
    status, _, body = https_get(https_port, pki, "x.wild.localhost")
    assert status == 200 and echo_json(body)["server"] == "B"


def test_host_naming_another_tunnel_than_sni_gets_421(running, pki):
    _, _, https_port = running
    status, _, _ = https_get(https_port, pki, "alpha.localhost", host="beta.localhost")
    assert status == 421


def test_unknown_sni_gets_default_certificate_and_404(running, pki):
    _, _, https_port = running
    ctx = pki.client_context()
    ctx.check_hostname = False  # the default certificate names no tunnel
    with ctx.wrap_socket(socket.create_connection((LOCAL, https_port), timeout=5), server_hostname="nope.localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 404")
    assert b"alpha.localhost" in data


def test_forwarded_headers_and_hop_by_hop_stripping(running):
    _, http_port, _ = running
    status, _, body = http_get(http_port, "alpha.localhost", "/p?q=1", headers={
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "ftp",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "do not forward",
        "Keep-Alive": "timeout=5",
        "Proxy-Connection": "keep-alive",
        "TE": "trailers",
        "Upgrade": "h2c",
        "X-Normal": "kept",
    })
    info = echo_json(body)
    hdr = info["hdr"]
    assert status == 200
    assert info["path"] == "/p?q=1"
    assert hdr["host"] == "alpha.localhost"
    assert hdr["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert hdr["x-forwarded-proto"] == "http"
    assert hdr["x-forwarded-host"] == "alpha.localhost"
    assert hdr["x-normal"] == "kept"
    for gone in ("x-secret", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert gone not in hdr, gone
    assert "close" not in hdr.get("connection", "")


def test_unknown_host_gets_404_page_listing_tunnels_escaped(running):
    _, http_port, _ = running
    status, headers, body = http_get(http_port, "no<b>pe.localhost")
    page = body.decode()
    assert status == 404
    assert headers["content-type"].startswith("text/html")
    assert "no&lt;b&gt;pe.localhost" in page and "<b>pe" not in page
    assert f"http://alpha.localhost:{http_port}" in page
    assert "beta.local" in page and "*.wild" in page


def test_unreachable_backend_gets_502_naming_backend_and_tunnel(engine_factory, ports):
    dead = f"http://127.0.0.1:{free_port()}"
    eng = engine_factory()
    eng.start(make_table([{"name": "down", "backends": dead}], *ports))
    status, headers, body = http_get(ports[0], "down.localhost")
    assert status == 502
    assert dead in body.decode() and "down" in body.decode()
    # and the connection stays usable afterwards
    assert http_get(ports[0], "down.localhost")[0] == 502


def test_keep_alive_client_and_upstream_connection_reuse(running, backend_a):
    _, http_port, _ = running
    conn = http.client.HTTPConnection(LOCAL, http_port, timeout=10)
    try:
        peers = set()
        for i in range(6):
            conn.request("GET", f"/r{i}", headers={"Host": "alpha.localhost"})
            resp = conn.getresponse()
            info = echo_json(resp.read())
            assert resp.status == 200 and info["path"] == f"/r{i}"
            peers.add(info["peer_port"])
        assert conn.sock is not None  # the client connection was never closed
    finally:
        conn.close()
    assert len(peers) == 1, peers  # one upstream connection served all six requests


def test_redirect_https_on_plain_http(engine_factory, backend_a, ports, pki):
    http_port, https_port = ports
    eng = engine_factory()
    eng.start(make_table([{"name": "redir", "backends": backend_a.url, "redirect_https": True},
                          {"name": "perm", "backends": backend_a.url, "redirect_https": True, "redirect_code": 308}],
                         *ports, pki))
    status, headers, _ = http_get(http_port, f"redir.localhost:{http_port}", "/a/b?c=d")
    assert status == 307  # temporary by default: browsers do not remember it
    assert http_get(http_port, f"perm.localhost:{http_port}", "/")[0] == 308
    assert headers["location"] == f"https://redir.localhost:{https_port}/a/b?c=d"
    status, _, body = https_get(https_port, pki, "redir.localhost")
    assert status == 200 and echo_json(body)["server"] == "A"


def test_header_rules_and_backend_path_prefix(engine_factory, backend_a, ports):
    eng = engine_factory()
    eng.start(make_table([{
        "name": "alpha",
        "backends": backend_a.url + "/api",
        "headers": {
            "request": {"add": {"X-Added": "1", "X-Replace": "new"}, "remove": ["X-Drop"]},
            "response": {"add": {"X-Resp": "yes"}, "remove": ["X-Remove-Me"]},
        },
    }], *ports))
    status, headers, body = http_get(ports[0], "alpha.localhost", "/v1/x", headers={
        "X-Drop": "1", "X-Replace": "old", "X-Keep": "k"})
    info = echo_json(body)
    assert status == 200
    assert info["path"] == "/api/v1/x"
    assert info["hdr"]["x-added"] == "1" and info["hdr"]["x-replace"] == "new" and info["hdr"]["x-keep"] == "k"
    assert "x-drop" not in info["hdr"]
    assert [k for k, _ in info["headers"]].count("X-Replace") == 1
    assert headers["x-resp"] == "yes" and "x-remove-me" not in headers and headers["x-backend"] == "A"


class _Plugin:
    @hookspecs.hookimpl
    def gotunnel_request(self, request):
        if request.path == "/hooked":
            return HookResponse(418, b"short and stout", [("X-Hook", request.tunnel)])
        if request.path.startswith("/rewrite"):
            request.path = "/rewritten"
            request.headers.append(("X-Plugin", request.scheme))
        return None


def _hook_relay(plugin: object | None):
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if plugin is not None:
        pm.register(plugin)
    return pm.hook


def test_request_hook_answers_and_modifies(engine_factory, backend_a, ports):
    eng = engine_factory(hook=_hook_relay(_Plugin()))
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    status, headers, body = http_get(ports[0], "alpha.localhost", "/hooked")
    assert (status, body, headers["x-hook"]) == (418, b"short and stout", "alpha")
    status, _, body = http_get(ports[0], "alpha.localhost", "/rewrite/me")
    info = echo_json(body)
    assert info["path"] == "/rewritten" and info["hdr"]["x-plugin"] == "http"
    assert all(r["path"] != "/hooked" for r in backend_a.requests)


def test_hook_gotunnel_request(engine_factory, backend_a, ports):
    """Through pluggy: a `wrapper=True` implementation wraps every call (and sees the answer); a
    plugin that raises gets that request answered 500, and the proxy serves the next one."""
    seen = []

    class Wrapper:
        @hookspecs.hookimpl(wrapper=True)
        def gotunnel_request(self, request):
            answer = yield
            seen.append((request.path, None if answer is None else answer.status))
            return answer

    class Broken:
        @hookspecs.hookimpl
        def gotunnel_request(self, request):
            if request.path == "/boom":
                raise RuntimeError("plugin bug")
            return None

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in (_Plugin(), Broken(), Wrapper()):
        pm.register(plugin)
    eng = engine_factory(hook=pm.hook)
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    assert http_get(ports[0], "alpha.localhost", "/hooked")[0] == 418
    assert http_get(ports[0], "alpha.localhost", "/boom")[0] == 500
    assert http_get(ports[0], "alpha.localhost", "/plain")[0] == 200
    assert seen == [("/hooked", 418), ("/plain", None)]  # the failed call raised through the wrapper


def test_hook_relay_without_implementations_is_skipped(engine_factory, backend_a, ports):
    eng = engine_factory(hook=_hook_relay(None))
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    assert eng.in_loop(lambda: eng.engine.st.hook_on) is False
    assert http_get(ports[0], "alpha.localhost", "/hooked")[0] == 200


def test_apply_swaps_routes_for_new_requests(engine_factory, backend_a, backend_b, ports):
    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "A"
    eng.apply(make_table([{"name": "alpha", "backends": backend_b.url},
                          {"name": "beta", "backends": backend_a.url}], *ports))
    assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "B"
    assert echo_json(http_get(ports[0], "beta.localhost")[2])["server"] == "A"
    eng.apply(make_table([], *ports))
    assert http_get(ports[0], "alpha.localhost")[0] == 404
    health = eng.engine.health()
    assert health.running and health.extra["requests_total"] >= 4


def test_plugin_registers_engine_without_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gotunnel_builtin_proxy import plugin\n"
        "specs = []\n"
        "plugin.gotunnel_register_engines(specs.append)\n"
        "assert specs[0].name == 'builtin' and specs[0].engine_class.name == 'builtin'\n"
        "bad = [m for m in ('uvloop', 'httptools') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_thousand_tunnels_route_by_dict_lookup(engine_factory, backend_a, backend_b, ports):
    tunnels = [{"name": f"t{i}", "backends": backend_a.url} for i in range(1000)]
    tunnels.append({"name": "*.w999", "backends": backend_b.url})
    eng = engine_factory()
    eng.start(make_table(tunnels, *ports))
    router = eng.in_loop(lambda: eng.engine.st.router)
    assert len(router.exact) == 1000 and router.wildcard.keys() == {"w999"}
    for name in ("t0", "t500", "t999"):
        assert echo_json(http_get(ports[0], f"{name}.localhost")[2])["server"] == "A"
    assert echo_json(http_get(ports[0], "x.w999.local")[2])["server"] == "B"
    assert http_get(ports[0], "t1000.localhost")[0] == 404
