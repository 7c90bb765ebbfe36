"""The builtin engine's native request counting (issue 15): worker processes' counters summed by
the daemon, through the real CLI. Exactness over a known mix is the conformance row
`metrics_counters`, run on both builds of the hot path; where each request lands (status class,
latency bucket) is checked here against the core's reference."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gotunnel_core.metrics.collector import parse_text
from gotunnel_core.metrics.stats import BUCKETS, TunnelStats
from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.daemon import http_get
from gotunnel_builtin_proxy.metrics import RouteCounters


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


@settings(max_examples=500, deadline=None)
@given(status=st.integers(-1000, 2000) | st.sampled_from((0, 101, 200, 499, 599, 999, 1000)),
       seconds=st.floats(0, 100, allow_nan=False) | st.sampled_from(BUCKETS),
       bytes_in=st.integers(0, 2**40), bytes_out=st.integers(0, 2**40))
def test_route_counters_place_each_request_like_the_core(status: int, seconds: float, bytes_in: int,
                                                         bytes_out: int) -> None:
    """`RouteCounters.count` (compiled or not) finds the status class and the latency bucket as the
    core's `TunnelStats.observe` does, with one difference: no status at all counts as 499."""
    counters = RouteCounters()
    counters.count(status, seconds, bytes_in, bytes_out)
    expected = TunnelStats()
    expected.observe(status or 499, seconds, bytes_in, bytes_out)
    got = counters.snapshot(active=0)
    assert (got.codes, got.buckets) == (expected.codes, expected.buckets)
    assert got.buckets[bisect_left(BUCKETS, seconds)] == 1
    assert (got.latency_sum, got.bytes_in, got.bytes_out) == (seconds, bytes_in, bytes_out)
