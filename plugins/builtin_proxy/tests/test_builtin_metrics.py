"""The builtin engine's native request counting (issue 15): worker processes' counters summed by
the daemon, through the real CLI. Exactness over a known mix is the conformance row
`metrics_counters`, run on both builds of the hot path."""

from __future__ import annotations

from typing import Any

from gotunnel_core.metrics.collector import parse_text
from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.daemon import http_get


def test_workers_report_per_tunnel_counters(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel.env["GOTUNNEL_BUILTIN_WORKERS"] = "2"
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    for _ in range(10):  # new connections: spread over both workers
        assert http_get(gotunnel.http_port, "app.localhost")[0] == 200
    key = ("gotunnel_requests_total", (("code", "2xx"), ("tunnel", "app")))

    def count() -> float:
        return parse_text(gotunnel("metrics", check=True).out).get(key, 0)

    wait_for(lambda: count() == 10, timeout=15, interval=0.3, what="10 requests summed over the workers")
    up = ("gotunnel_backend_up", (("backend", backend.url), ("tunnel", "app")))
    assert parse_text(gotunnel("metrics", check=True).out)[up] == 1
