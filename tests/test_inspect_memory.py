"""The inspector's memory stays bounded: 10,000 requests with 4 KiB bodies through an inspected tunnel
leave the daemon's RSS where 1,500 left it (the ring buffer keeps 500). Measured, not timed."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import ThreadingHTTPServer
from typing import Iterator

import psutil
import pytest

from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.backends import EchoBackend, JsonEchoHandler

from inspect_helpers import dash_json

BODY = b"x" * 4096
MIB = 1024 * 1024


class OneWriteEcho(JsonEchoHandler):
    """The JSON echo, its response written in one send: head and body in separate segments meet
    Nagle and delayed ACKs (40 ms a request), and 10,000 requests would take minutes."""

    wbufsize = 1 << 16


@pytest.fixture
def fast_backend() -> Iterator[EchoBackend]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OneWriteEcho)
    server.daemon_threads = True
    server.name = "fast"  # type: ignore[attr-defined]
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backend = EchoBackend("fast", server.server_address[1], server, thread)
    yield backend
    backend.close()


def send(g: Gotunnel, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", g.http_port, timeout=30)
    try:
        for n in range(count):
            conn.request("POST", f"/m{n}", body=BODY, headers={"Host": f"mem.localhost:{g.http_port}"})
            response = conn.getresponse()
            assert response.status == 200
            response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_rss_is_bounded_after_10000_requests(gotunnel: Gotunnel, fast_backend: EchoBackend) -> None:
    backend = fast_backend
    gotunnel("start", "-d", "mem", "-p", str(backend.port), "--inspect", check=True)
    pid = gotunnel.daemon_pid()
    assert pid is not None
    daemon = psutil.Process(pid)
    send(gotunnel, 1500)
    warm = daemon.memory_info().rss
    send(gotunnel, 8500)
    after = daemon.memory_info().rss
    assert len(backend.hits) >= 10000
    rows = dash_json(gotunnel, "/api/requests?limit=100000")["requests"]
    assert len(rows) == 500 and rows[0]["path"] == "/m8499"
    # Unbounded, 8,500 more records of 4 KiB request + ~4.5 KiB response bodies would add ~70 MiB.
    growth = after - warm
    print(json.dumps({"rss_after_1500_mib": round(warm / MIB, 1), "rss_after_10000_mib": round(after / MIB, 1)}))
    assert growth < 16 * MIB, f"daemon RSS grew {growth / MIB:.1f} MiB between 1,500 and 10,000 requests"
