"""The issue-19 edges on the builtin engine's HTTP/2 path (TLS, ALPN h2). The conformance rows send
HTTP/1.1 (and the LAN row's curl negotiates h2); these send each edge as an HTTP/2 stream: dot
segments 400, the loop marker 508 (and sent upstream), a backend that never answers 504 after
its upstream_timeout, plain CONNECT 405 and `OPTIONS *` 200, none of them reaching a backend."""

from __future__ import annotations

import dataclasses
import secrets
import socket
import time
from typing import Any, Iterator

import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, backend_a, echo_json, engine_factory, make_table, pki, ports,
)
from gotunnel_core.testing.h2client import H2Client, Response


@dataclasses.dataclass
class Proxy:
    port: int
    ca: str
    hop_id: str

    def client(self, name: str = "alpha") -> H2Client:
        c = H2Client(self.port, f"{name}.localhost", self.ca)
        assert c.alpn == "h2"
        return c


@pytest.fixture
def proxy(engine_factory: Any, backend_a: Any, ports: tuple[int, int], pki: Any) -> Iterator[Proxy]:
    hung = socket.create_server((LOCAL, 0))  # connections wait in its backlog: a backend that never answers
    try:
        table = make_table([
            {"name": "alpha", "backends": backend_a.url + "/app"},
            {"name": "beta", "backends": f"http://{LOCAL}:{hung.getsockname()[1]}", "upstream_timeout": 1},
        ], *ports, pki)
        table = dataclasses.replace(table, hop_id=secrets.token_hex(8))
        engine_factory().start(table)
        yield Proxy(ports[1], str(pki.ca_file), table.hop_id)
    finally:
        hung.close()


def test_h2_dot_segments_get_400_and_never_reach_the_backend(proxy: Proxy, backend_a: Any) -> None:
    c = proxy.client()
    try:
        for path in ("/../admin", "/%2e%2e/admin", "/x/.%2E/admin", "/./admin", "/x/.."):
            r = c.request("GET", path)
            assert r.status == 400, (path, r.status)
        assert backend_a.requests == []
        r = c.request("GET", "/a/b.c/.well-known/x?next=/../y")  # dots in names and the query are fine
        assert r.status == 200 and echo_json(bytes(r.body))["path"] == "/app/a/b.c/.well-known/x?next=/../y"
    finally:
        c.close()


def test_h2_loop_marker_is_sent_upstream_and_refused_when_it_comes_back(proxy: Proxy, backend_a: Any) -> None:
    c = proxy.client()
    try:
        r = c.request("GET", "/x")
        assert r.status == 200 and echo_json(bytes(r.body))["hdr"]["gotunnel-hop"] == proxy.hop_id
        seen = len(backend_a.requests)
        r = c.request("GET", "/x", headers=[("gotunnel-hop", proxy.hop_id)])
        assert r.status == 508 and b"loop" in bytes(r.body)
        assert len(backend_a.requests) == seen
        r = c.request("GET", "/x", headers=[("gotunnel-hop", "another-gotunnel")])  # another user's marker
        assert r.status == 200 and echo_json(bytes(r.body))["hdr"]["gotunnel-hop"] == proxy.hop_id
    finally:
        c.close()


def test_h2_backend_that_never_answers_gets_504_after_the_tunnels_upstream_timeout(proxy: Proxy) -> None:
    c = proxy.client("beta")
    try:
        started = time.monotonic()
        r = c.request("GET", "/slow", authority="beta.localhost")
        took = time.monotonic() - started
        assert r.status == 504 and b"upstream_timeout" in bytes(r.body)
        assert 0.9 <= took < 6, f"504 after {took:.1f} s, expected 1 s"
        assert c.request("GET", "/again", authority="beta.localhost").status == 504  # the connection stays usable
    finally:
        c.close()


def test_h2_plain_connect_is_405_and_options_asterisk_200(proxy: Proxy, backend_a: Any) -> None:
    c = proxy.client()
    try:
        for authority in ("alpha.localhost:443", "example.com:443"):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority)], end_stream=False)
            c.responses[sid] = Response()
            c.flush()
            r = c.wait(sid)
            assert r.status == 405, (authority, r.status)
        r = c.request("OPTIONS", "*")
        assert r.status == 200 and bytes(r.body) == b""
        assert backend_a.requests == []
    finally:
        c.close()
