"""Metrics (issue 15): the shared stats model, the Prometheus text, the access-log stream, the
daemon's endpoint (loopback only, checked from a network namespace) and the Grafana dashboard.

The per-engine exactness row is the conformance suite's `metrics_counters`
(gotunnel_core/testing/conformance/test_obs.py); each engine's own parsing of its statistics is
tested in its plugin's tests/ (test_<engine>_metrics.py).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from typing import Any, Iterator

import pytest

from gotunnel_core.metrics.collector import DaemonMetrics, MetricsSnapshot, parse_text
from gotunnel_core.metrics.endpoint import metrics_app
from gotunnel_core.metrics.logstream import AccessLogStream, AccessRecord, TunnelMatcher
from gotunnel_core.metrics.stats import BUCKETS, BackendHealth, EngineStats, TunnelStats
from gotunnel_core.testing import Gotunnel, free_port
from gotunnel_core.testing.daemon import http_get


# ----- the model and the text -------------------------------------------------------------------

def test_tunnel_stats_observe_merge_and_round_trip() -> None:
    a = TunnelStats()
    a.observe(200, 0.004, 10, 100)
    a.observe(404, 0.3, 5, 50)
    a.observe(502, 99.0, 1, 1)
    a.observe(0, 0.0, 0, 0)  # no status at all
    assert a.codes[:6] == [1, 0, 1, 0, 1, 1]
    assert a.buckets[0] == 2 and a.buckets[BUCKETS.index(0.5)] == 1 and a.buckets[-1] == 1
    b = TunnelStats.from_dict(a.to_dict())
    b.merge(a)
    assert b.codes[:6] == [2, 0, 2, 0, 2, 2] and b.bytes_in == 32 and b.bytes_out == 302
    assert TunnelStats.from_dict({"active": None}).active is None


def test_collector_renders_every_family_with_tunnel_labels() -> None:
    stats = EngineStats(restarts=2)
    mix = stats.tunnel("mix")
    mix.observe(200, 0.02, 10, 20)
    mix.observe(503, 0.02, 10, 20)
    mix.upstream_errors = 1
    stats.tunnels["quiet"] = TunnelStats(active=None)
    metrics = DaemonMetrics("nginx")
    metrics.observe_reload(0.2)
    text = metrics.render(MetricsSnapshot(
        "nginx", stats, ["mix", "quiet"], [BackendHealth("mix", "http://127.0.0.1:1", False)],
        [("mix", 1_900_000_000.0)])).decode()
    samples = parse_text(text)
    assert samples[("gotunnel_requests_total", (("code", "2xx"), ("tunnel", "mix")))] == 1
    assert samples[("gotunnel_requests_total", (("code", "5xx"), ("tunnel", "mix")))] == 1
    assert samples[("gotunnel_request_duration_seconds_bucket", (("le", "0.025"), ("tunnel", "mix")))] == 2
    assert samples[("gotunnel_upstream_errors_total", (("tunnel", "mix"),))] == 1
    assert samples[("gotunnel_engine_restarts_total", (("engine", "nginx"),))] == 2
    assert samples[("gotunnel_engine_reload_duration_seconds_count", (("engine", "nginx"),))] == 1
    assert samples[("gotunnel_backend_up", (("backend", "http://127.0.0.1:1"), ("tunnel", "mix")))] == 0
    assert samples[("gotunnel_certificate_expiry_timestamp_seconds", (("name", "mix"),))] == 1.9e9
    assert samples[("gotunnel_tunnels", ())] == 2
    assert ("gotunnel_active_connections", (("tunnel", "mix"),)) in samples
    assert ("gotunnel_active_connections", (("tunnel", "quiet"),)) not in samples  # unknown, not zero


def test_tunnel_matcher_maps_hosts_to_tunnels() -> None:
    matcher = TunnelMatcher(["mix", "*.preview"])
    assert matcher.match("mix") == "mix"
    assert matcher.match("Mix.localhost:8443") == "mix"
    assert matcher.match("mix.local.") == "mix"
    assert matcher.match("feature.preview.localhost") == "*.preview"
    assert matcher.match("a.b.preview.localhost") is None  # one label only, like the routing
    assert matcher.match("preview.localhost") is None
    assert matcher.match("mix.example.com") is None and matcher.match("[::1]:80") is None


def _space_separated(datagram: bytes) -> AccessRecord | None:
    """A toy engine's access-log record: `host status seconds in out errors`."""
    host, status, seconds, bytes_in, bytes_out, errors = datagram.decode().split()
    return AccessRecord(host, int(status), float(seconds), int(bytes_in), int(bytes_out), int(errors))


def test_access_log_stream_counts_datagrams_for_known_tunnels(tmp_path: Any) -> None:
    import asyncio

    async def run() -> TunnelStats:
        stream = AccessLogStream(tmp_path / "m.sock", _space_separated)
        stream.open()
        stream.set_tunnels(["mix"])
        assert oct(os.stat(stream.path).st_mode & 0o777) == "0o600"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            for line in (b"mix.localhost:8080 502 0.1 1 2 1", b"gone 200 0.1 1 2 0", b"junk"):
                client.sendto(line, str(stream.path))
        stream.drain()
        stats = stream.tunnels["mix"]
        assert stream.dropped == 2
        stream.close()
        assert not stream.path.exists()
        return stats

    stats = asyncio.run(run())
    assert stats.codes[5] == 1 and stats.upstream_errors == 1 and stats.bytes_out == 2 and stats.active is None


def test_endpoint_refuses_non_loopback_peers_and_unknown_paths() -> None:
    app = metrics_app(lambda: b"gotunnel_tunnels 1.0\n")

    def call(addr: str, path: str = "/metrics") -> tuple[str, bytes]:
        seen: list[str] = []
        body = b"".join(app({"REMOTE_ADDR": addr, "PATH_INFO": path}, lambda status, headers: seen.append(status)))
        return seen[0], body

    assert call("127.0.0.1") == ("200 OK", b"gotunnel_tunnels 1.0\n")
    assert call("::1")[0] == "200 OK"
    assert call("192.168.1.20")[0].startswith("403")
    assert call("::ffff:192.168.1.20")[0].startswith("403")
    assert call("127.0.0.1", "/other")[0].startswith("404")


# ----- through the daemon --------------------------------------------------------------------------

def _scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def test_endpoint_serves_what_gotunnel_metrics_prints(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    port = free_port()
    gotunnel.env["GOTUNNEL_METRICS_PORT"] = str(port)
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    assert http_get(gotunnel.http_port, "app.localhost")[0] == 200
    assert gotunnel.json("status")  # the daemon answers
    scraped = parse_text(_scrape(port))
    printed = parse_text(gotunnel("metrics", check=True).out)
    key = ("gotunnel_requests_total", (("code", "2xx"), ("tunnel", "app")))
    assert scraped[key] == printed[key] == 1
    assert set(scraped) == set(printed)
    with socket.socket() as sock:  # bound to loopback only, whatever `bind` says
        assert sock.connect_ex(("127.0.0.1", port)) == 0
    if shutil.which("ss"):
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]


def test_metrics_port_taken_fails_the_daemon_with_one_line(gotunnel: Gotunnel, echo_backend: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gotunnel.env["GOTUNNEL_METRICS_PORT"] = str(taken.getsockname()[1])
        result = gotunnel("start", "-d", "app", "-p", str(echo_backend().port))
    assert result.code == 1 and "cannot serve metrics on 127.0.0.1:" in result.err


def test_bad_metrics_port_is_a_usage_error(gotunnel: Gotunnel) -> None:
    result = gotunnel("start", "-d", "app", "-p", "3000", extra_env={"GOTUNNEL_METRICS_PORT": "70000"})
    assert result.code == 2 and "'70000'" in result.err and "GOTUNNEL_METRICS_PORT" in result.err
    assert gotunnel.daemon_pid() is None


def test_metrics_without_a_daemon_fails_cleanly(gotunnel: Gotunnel) -> None:
    result = gotunnel("metrics")
    assert result.code == 1 and result.err.startswith("error: no gotunnel daemon is running")
    assert gotunnel.daemon_pid() is None  # never spawns one


# ----- from another network namespace (a LAN peer) ---------------------------------------------

@pytest.fixture
def lan_peer() -> Iterator[tuple[str, str]]:
    """A network namespace linked to this one by a veth pair: (namespace, this side's address)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    tag = secrets.token_hex(3)
    ns, host_if, peer_if = f"gt-m-{tag}", f"gtmh{tag}", f"gtmp{tag}"
    net = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}."

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)

    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"`ip netns add` does not work here: {exc.stderr.strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
        ip("addr", "add", net + "1/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", net + "2/24", "dev", peer_if)
        ip("-n", ns, "link", "set", peer_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, net + "1"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _connect_from(ns: str, address: str, port: int) -> str:
    """What a TCP connect from inside `ns` to address:port gives: "connected" or the error's name."""
    code = ("import socket,sys\ns=socket.socket();s.settimeout(5)\n"
            "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print('connected')\n"
            "except OSError as e:\n print(type(e).__name__)\n")
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, address, str(port)],
                            capture_output=True, text=True, timeout=30)
    return result.stdout.strip()


@pytest.mark.root
def test_lan_peer_reaches_tunnels_but_not_metrics(gotunnel: Gotunnel, echo_backend: Any,
                                                  lan_peer: tuple[str, str]) -> None:
    ns, host_address = lan_peer
    port = free_port()
    gotunnel.env.update(GOTUNNEL_METRICS_PORT=str(port), GOTUNNEL_BIND="0.0.0.0")
    gotunnel("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert _connect_from(ns, host_address, gotunnel.http_port) == "connected"  # the tunnel is on the LAN
    assert _connect_from(ns, host_address, port) == "ConnectionRefusedError"  # its metrics are not
    assert "gotunnel_tunnels 1.0" in _scrape(port)


def test_grafana_dashboard_queries_only_metrics_the_daemon_serves() -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"gotunnel_[a-z_]+", e)}
    stats = EngineStats()
    stats.tunnel("t").observe(200, 0.1, 1, 1)
    metrics = DaemonMetrics("builtin")
    text = metrics.render(MetricsSnapshot("builtin", stats, ["t"], [BackendHealth("t", "http://b", True)], [("t", 1.0)]))
    served = {name for name, _ in parse_text(text.decode())}
    assert used and used <= served, used - served
