"""Conformance rows from the hardening review (issue 19): behaviours every engine must share at the
edges: a backend that never answers (504), a path that would leave the backend's prefix (400),
odd methods (CONNECT 405, `OPTIONS *` 200), proxy loops (refused, or 508 at run time), the
redirect code, the 404 page's links, and what a LAN peer may see, from a network namespace.

Each test is one row, run through the real CLI and daemon on every engine; an engine that cannot
do a row says why in its `capabilities`.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from ..backends import Relay, SilentServer, connect, get
from ..runner import free_port, wait_for
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures


def raw_exchange(port: int, request: bytes, timeout: float = 15) -> tuple[int, bytes]:
    """Send `request` as bytes (targets no client library would send) and read one response:
    (status, body). The proxy may close afterwards."""
    sock = connect(port, None, None, timeout)
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    finally:
        sock.close()
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


# ----- behaviours ------------------------------------------------------------------------------

@behaviour("upstream_timeout", "Backend that never answers: 504 after upstream_timeout (global and per tunnel)")
def test_backend_that_never_answers_gets_504(env: Env, app: Any) -> None:
    env.g.env["GOTUNNEL_UPSTREAM_TIMEOUT"] = "1.5"  # the global setting
    hung, prompt = SilentServer(), app("prompt")
    try:
        env.start("-d", "hung", "-p", str(hung.port), "--upstream-timeout", "1")  # the per-tunnel override
        env.start("-d", "hung2", "-p", str(hung.port))
        env.start("-d", "prompt", "-p", str(prompt.port))
        for name, limit in (("hung", 1.0), ("hung2", 1.5)):
            for https in (False, True):
                started = time.monotonic()
                status, headers, body = env.get(name, "/slow", https=https)
                took = time.monotonic() - started
                assert status == 504, (name, https, status, body[:200])
                assert limit * 0.9 <= took < limit + 5, f"{name}: 504 after {took:.1f} s, expected {limit} s"
                assert headers["content-type"].startswith("text/html") and b"504" in body
        assert b"upstream_timeout" in env.get("hung")[2]  # this machine gets the page saying why
        assert env.get("prompt")[0] == 200  # a backend that answers is not cut
    finally:
        hung.close()


@behaviour("dot_segments", "Dot segments (plain or %2e) in the path: 400, never past the backend prefix")
def test_dot_segments_never_leave_the_backend_prefix(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "pre", "--backend", backend.url + "/app")
    port, host = env.g.http_port, env.url_host("pre")
    for target in ("/../admin", "/%2e%2e/admin", "/%2E%2e/admin", "/x/../../admin", "/x/%2e%2E/%2e./admin",
                   "/./admin", "/x/.%2e/admin", "/x/.."):
        hits = backend.hits
        status, _ = raw_exchange(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert status == 400, (target, status)
        assert backend.hits == hits, f"{target} reached the backend"
    status, _, body = env.get("pre", "/a/b.c/.well-known/x?next=/../y")  # dots in names and the query are fine
    assert status == 200 and body_json(body)["path"] == "/app/a/b.c/.well-known/x?next=/../y"
    sock = connect(env.g.https_port, "pre.localhost", env.ca)
    sock.sendall(f"GET /%2e%2e/admin HTTP/1.1\r\nHost: {env.url_host('pre', True)}\r\nConnection: close\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    sock.close()


@behaviour("odd_methods", "CONNECT: 405; OPTIONS *: 200, answered by the proxy")
def test_connect_is_refused_and_options_asterisk_answered(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "odd", "-p", str(backend.port))
    port, hits = env.g.http_port, backend.hits  # `start` may have probed the backend's Host check
    # As forward-proxy clients send it (curl -p): the Host is the authority (HAProxy answers 400
    # before any rule when they differ, which also keeps the request from the backend).
    for authority in (f"odd.localhost:{env.g.https_port}", "example.com:443"):
        status, _ = raw_exchange(port, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        assert status == 405, (authority, status)
    for host in (env.url_host("odd"), "nobody.localhost"):
        status, body = raw_exchange(port, f"OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert (status, body) == (200, b""), (host, status, body[:200])
    assert backend.hits == hits  # neither reached the backend
    assert env.get("odd")[0] == 200


@behaviour("proxy_loop", "Backend at gotunnel's own port refused; a loop through another hop: 508")
def test_proxy_loops_are_refused_or_stopped(env: Env, app: Any) -> None:
    http_port, https_port = env.g.http_port, env.g.https_port
    for backend in (str(http_port), f"https://127.0.0.1:{https_port}", f"http://localhost:{http_port}/x",
                    f"http://0.0.0.0:{http_port}"):
        result = env.g("start", "-d", "loop", "--backend", backend)
        assert result.code == 2 and "own" in result.err and "loop" in result.err, (backend, result.err)
    relay = Relay(http_port)  # a loop through a hop gotunnel cannot see: stopped at run time
    try:
        env.start("-d", "loop", "-p", str(relay.port))
        before = relay.connections  # `start` may have probed the backend's Host check through the relay
        started = time.monotonic()
        status, headers, body = env.get("loop", "/round")
        assert status == 508 and headers["content-type"].startswith("text/html") and b"loop" in body
        assert time.monotonic() - started < 5 and relay.connections - before <= 2, relay.connections - before
    finally:
        relay.close()
    backend = app()  # the marker does not disturb ordinary traffic
    env.start("-d", "fine", "-p", str(backend.port))
    assert env.get("fine")[0] == 200


@behaviour("redirect_code", "HTTPS redirect is 307, or 308 when asked")
def test_redirect_code_is_307_unless_308_is_asked(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "temp", "-p", str(backend.port), "--redirect-https")
    env.start("-d", "perm", "-p", str(backend.port), "--redirect-https", "--redirect-code", "308")
    for name, code in (("temp", 307), ("perm", 308)):
        status, headers, _ = env.get(name, "/a?b=c")
        assert status == code and headers["location"] == f"https://{name}.localhost:{env.g.https_port}/a?b=c"
    refused = env.g("start", "-d", "bad", "-p", str(backend.port), "--redirect-https", "--no-https")
    assert refused.code == 2 and "redirect_https" in refused.err


@behaviour("not_found_links", "404 page links only names that resolve (no .local without mDNS/hosts)")
def test_not_found_page_links_only_names_that_resolve(env: Env, app: Any) -> None:
    backend = app()  # mDNS is off here (and no hosts file): NAME.local cannot resolve
    env.start("-d", "alpha", "-p", str(backend.port))
    status, _, body = env.get("nobody")
    assert status == 404 and b"alpha.localhost" in body and b"alpha.local\"" not in body and b"alpha.local:" not in body


# ----- what a LAN peer sees: a client in a network namespace ---------------------------------------

@dataclass
class LanPeer:
    """A network namespace joined to this machine by a veth pair: `host_ip` is this machine's end."""

    ns: str
    host_ip: str
    peer_ip: str

    def curl(self, url: str, *, host: str | None = None, headers: dict[str, str] | None = None,
             resolve: str | None = None, cacert: str | None = None, method: str = "GET") -> tuple[int, bytes]:
        """One request from inside the namespace: (status or 0 on a TLS/connection failure, body)."""
        argv = ["ip", "netns", "exec", self.ns, "curl", "-sS", "--max-time", "15", "-o", "-", "-w", "\n%{http_code}"]
        if method != "GET":
            argv += ["-X", method]
        if host:
            argv += ["-H", f"Host: {host}"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        if resolve:
            argv += ["--resolve", resolve]
        if cacert:
            argv += ["--cacert", cacert]
        result = subprocess.run(argv + [url], capture_output=True, timeout=30)
        body, _, code = result.stdout.rpartition(b"\n")
        return (int(code) if code.isdigit() else 0), body


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 100.64.0.0/10 that no interface here uses."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, timeout=10).stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(f"100.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randrange(0, 256, 4)}/30")
        if f" {net[1]}/" not in used and f" {net[2]}/" not in used:
            return net
    raise AssertionError("no free /30 in 100.64.0.0/10")


@pytest.fixture
def lan_peer() -> Iterator[LanPeer]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the LAN peer is a network namespace joined by a veth pair")
    if shutil.which("ip") is None or shutil.which("curl") is None:
        pytest.skip("needs iproute2 (ip) and curl")
    tag = secrets.token_hex(3)
    ns, host_if, peer_if = f"gt-lan-{tag}", f"gtl{tag}", f"gtp{tag}"
    net = _free_subnet()
    host_ip, peer_ip = str(net[1]), str(net[2])

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"`ip netns add` does not work here: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{peer_ip}/30", "dev", peer_if)
        ip("-n", ns, "link", "set", peer_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield LanPeer(ns, host_ip, peer_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@behaviour("lan_visibility", "LAN peer (network namespace): plain pages, no .localhost, no lan = false tunnels")
def test_lan_peers_see_plain_pages_and_no_loopback_names(env: Env, app: Any, lan_peer: LanPeer) -> None:
    env.g.env["GOTUNNEL_BIND"] = "0.0.0.0"  # as by default: phones reach NAME.local
    public, private = app("public"), app("private")
    dead = free_port()
    env.start("-d", "pub", "-p", str(public.port))
    env.start("-d", "priv", "-p", str(private.port), "--no-lan")
    env.start("-d", "down", "-p", str(dead))
    http = f"http://{lan_peer.host_ip}:{env.g.http_port}/"

    def lan(host: str, **kw: Any) -> tuple[int, bytes]:
        return lan_peer.curl(http, host=f"{host}:{env.g.http_port}", **kw)

    wait_for(lambda: lan("pub.local")[0] == 200, timeout=20, what="the LAN peer to reach pub.local")
    hits = (public.hits, private.hits)
    # .localhost names are for this machine; a forwarded-for header claiming loopback changes nothing
    assert lan("pub.localhost")[0] == 404
    assert lan("pub.localhost", headers={"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"})[0] == 404
    assert lan("priv.local")[0] == 404  # lan = false
    assert (public.hits, private.hits) == hits
    status, body = lan("nobody.local")  # the 404 page lists nothing
    assert status == 404 and b"pub" not in body and b"priv" not in body
    status, body = lan("down.local")  # the 502 page names no backend and no error
    assert status == 502 and str(dead).encode() not in body and b"127.0.0.1" not in body
    # HTTPS from the LAN: pub.local verifies and answers; priv.local is not served (404 or no certificate)
    https = f"https://pub.local:{env.g.https_port}/"
    assert lan_peer.curl(https, resolve=f"pub.local:{env.g.https_port}:{lan_peer.host_ip}", cacert=env.ca)[0] == 200
    status, _ = lan_peer.curl(f"https://priv.local:{env.g.https_port}/", cacert=env.ca,
                              resolve=f"priv.local:{env.g.https_port}:{lan_peer.host_ip}")
    assert status in (0, 404) and private.hits == hits[1]
    # this machine still sees everything, in detail
    assert env.get("priv")[0] == 200 and get(env.g.http_port, f"priv.local:{env.g.http_port}")[0] == 200
    status, _, body = env.get("nobody")
    assert status == 404 and b"pub.localhost" in body
    status, _, body = env.get("down")
    assert status == 502 and f"127.0.0.1:{dead}".encode() in body
