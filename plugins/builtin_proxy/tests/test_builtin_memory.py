"""Builtin engine memory (issue 19, item 10): a closed connection is freed at once by reference
counting, not left to the cyclic garbage collector.

The request parser holds its protocol (its callbacks), so a protocol that kept its parser after
the connection closed lived on until a full collection, and with it the transport and, for TLS,
some 260 KB of buffers per connection: under HTTPS load the daemon's heap grew by tens of MiB
between collections and stayed fragmented. The soak scenario (`make soak`, benchmarks/soak.py)
measures the effect on RSS; this test pins the cause.
"""

from __future__ import annotations

import gc
import socket
import ssl
from typing import Any

import pytest

import psutil

from builtin_helpers import LOCAL, backend_a, engine_factory, make_pki, make_table, ports, wait_for  # noqa: F401
from gotunnel_core.testing.backends import Relay
from gotunnel_core.testing.daemon import http_get
from gotunnel_core.testing.runner import Gotunnel, free_port


def protocols_alive() -> list[str]:
    """Client and upstream protocols still in memory (gc.get_objects also sees unreachable cycles)."""
    return [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in ("ClientProtocol", "UpstreamProtocol")]


def _request_and_cut(port: int, host: str, ctx: ssl.SSLContext | None) -> None:
    """One keep-alive request, its answer read, then the connection dropped without a goodbye
    (as wrk does at the end of a run)."""
    raw = socket.create_connection((LOCAL, port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=host) if ctx else raw
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    sock.close()


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_closed_connections_are_freed_without_the_garbage_collector(engine_factory: Any, backend_a: Any,
                                                                   ports: tuple[int, int], tmp_path: Any,
                                                                   https: bool) -> None:
    pki = make_pki(tmp_path / "pki", ["alpha"])
    eng = engine_factory({"upstream_idle_timeout": 0.2})
    eng.start(make_table([{"name": "alpha", "backends": [backend_a.url]}], *ports, pki))
    ctx = pki.client_context() if https else None
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            _request_and_cut(ports[1] if https else ports[0], "alpha.localhost", ctx)
        wait_for(lambda: eng.in_loop(lambda: not eng.engine.st.conns), what="every client connection to close")
        wait_for(lambda: eng.in_loop(lambda: not any(p.idle for p in eng.engine._pools.values())), timeout=10,
                 what="idle upstream connections to be swept")
        alive = protocols_alive()
        assert not alive, f"closed but not freed (the garbage collector is off): {alive}"
    finally:
        gc.enable()


# ----- item 2, builtin: a loop no longer eats memory and sockets ------------------------------------------------

def test_builtin_loop_through_a_relay_stays_bounded(gotunnel: Gotunnel) -> None:
    gotunnel("start", "-d", "seed", "-p", str(free_port()), check=True)
    daemon = psutil.Process(gotunnel.daemon_pid())
    relay = Relay(gotunnel.http_port)
    try:
        gotunnel("start", "-d", "loop", "-p", str(relay.port), check=True)
        before = daemon.memory_info().rss
        statuses = {http_get(gotunnel.http_port, "loop.localhost", f"/{i}")[0] for i in range(200)}
        assert statuses == {508}
        grown = (daemon.memory_info().rss - before) / 2**20
        assert grown < 30, f"RSS grew {grown:.0f} MiB over 200 looped requests"
        assert relay.connections <= 200  # one relay hop per request, not a cascade
        wait_for(lambda: len(daemon.net_connections("tcp")) < 50, timeout=15, what="sockets to be released")
    finally:
        relay.close()
