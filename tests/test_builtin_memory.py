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

from builtin_helpers import LOCAL, backend_a, engine_factory, make_pki, make_table, ports, wait_for  # noqa: F401


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
