"""The suite's observability rows: per-tunnel request counters from every engine, relabelled to
tunnel names and exact for a known mix, and W3C trace context reaching the backend.

How an engine counts (its own statistics, an access-log stream, natively) is its business; where
its numbers differ in meaning it declares a `variant` for `metrics_counters` in its capabilities.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from ...metrics.collector import parse_text
from ..backends import header_values
from ..runner import wait_for
from . import Env, app, behaviour, env  # noqa: F401 - fixtures


class _StatusHandler(BaseHTTPRequestHandler):
    """200 for every path but /missing*, which answers 404 (the backend's own). Every answer closes
    its connection, so once the server is closed no pooled connection can still reach it."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"missing\n" if self.path.startswith("/missing") else b"ok\n"
        self.send_response(404 if self.path.startswith("/missing") else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def status_backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def tunnel_samples(env: Env, tunnel: str) -> dict[str, float]:
    """The tunnel's samples from `gotunnel metrics`: {"requests_2xx": n, "upstream_errors": n, ...}."""
    result = env.g("metrics", check=True)
    out: dict[str, float] = {}
    for (name, items), value in parse_text(result.out).items():
        labels = dict(items)
        if labels.get("tunnel") != tunnel:
            continue
        if name == "gotunnel_requests_total":
            out["requests_" + labels["code"]] = value
        elif name == "gotunnel_request_duration_seconds_count":
            out["latency_count"] = value
        elif name in ("gotunnel_upstream_errors_total", "gotunnel_received_bytes_total", "gotunnel_sent_bytes_total"):
            out[name[len("gotunnel_"):-len("_total")]] = value
    return out


@behaviour("metrics_counters", "Metrics: per-tunnel request counters match a known mix (2xx, 404, 502) exactly")
def test_request_counters_match_a_known_mix_exactly(env: Env, status_backend: ThreadingHTTPServer) -> None:
    port = status_backend.server_address[1]
    env.start("-d", "mix", "-p", str(port))
    ok, missing, bad = 6, 3, 4
    for i in range(ok):
        assert env.get("mix", "/", https=bool(i % 2))[0] == 200
    for i in range(missing):
        assert env.get("mix", "/missing", https=bool(i % 2))[0] == 404
    assert env.get("nobody")[0] == 404  # no tunnel: counted for none of them
    status_backend.shutdown()
    status_backend.server_close()
    for i in range(bad):
        assert env.get("mix", "/", https=bool(i % 2))[0] == 502
    expected = {"requests_1xx": 0, "requests_2xx": ok, "requests_3xx": 0, "requests_4xx": missing,
                "requests_5xx": bad, "upstream_errors": bad}

    def settled() -> dict[str, float] | None:
        samples = tunnel_samples(env, "mix")
        # Every proxied request is timed too (Envoy publishes its histograms at each stats flush).
        timed = samples.get("latency_count", 0) >= ok + missing
        return samples if {k: samples.get(k) for k in expected} == expected and timed else None

    try:
        samples = wait_for(settled, timeout=15, interval=0.2, what="the counters to reach the mix")
    except AssertionError:
        raise AssertionError(f"counters {tunnel_samples(env, 'mix')} never matched {expected}") from None
    assert samples["sent_bytes"] > 0  # received: Caddy counts request bodies only (none here)
    assert {k: tunnel_samples(env, "mix").get(k) for k in expected} == expected  # and nothing more arrives
    text = env.g("metrics", check=True).out
    assert 'gotunnel_certificate_expiry_timestamp_seconds{name="mix"}' in text
    assert "gotunnel_tunnels 1.0" in text
    assert f'gotunnel_engine_info{{engine="{env.engine}"}} 1.0' in text


@behaviour("trace_context", "W3C traceparent/tracestate reach the backend (same trace)")
def test_traceparent_reaches_the_backend(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "traced", "-p", str(backend.port))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    for https in (False, True):
        sent = f"00-{trace_id}-b7ad6b7169203331-01"
        status, _, body = env.get("traced", "/t", https=https, headers={"traceparent": sent, "tracestate": "gt=1"})
        echo = json.loads(body)
        assert status == 200
        (received,) = header_values(echo, "traceparent")
        # The same trace; the parent is the client's span, or the engine's own when it traces.
        version, got_trace, parent, flags = received.split("-")
        assert (version, got_trace, flags) == ("00", trace_id, "01") and len(parent) == 16
        assert header_values(echo, "tracestate") == ["gt=1"]
