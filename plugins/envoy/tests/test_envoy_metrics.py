"""Envoy's metrics (issue 15): its per-cluster Prometheus stats and `/clusters` health relabelled to
tunnel names (one cluster per tunnel). Through a real Envoy: the conformance row `metrics_counters`."""

from __future__ import annotations

from gotunnel_core.models import Tunnel
from gotunnel_envoy.metrics import backend_health, tunnel_stats


def test_stats_relabelled_to_tunnels() -> None:
    text = "\n".join([
        "# TYPE envoy_cluster_upstream_rq_xx counter",
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="tunnel_mix"} 6',
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="tunnel_mix"} 4',
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="tunnel_other"} 9',
        "# TYPE envoy_cluster_upstream_cx_connect_fail counter",
        'envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="tunnel_mix"} 4',
        "# TYPE envoy_cluster_upstream_cx_rx_bytes_total counter",
        'envoy_cluster_upstream_cx_rx_bytes_total{envoy_cluster_name="tunnel_mix"} 1000',
        "# TYPE envoy_cluster_upstream_rq_time histogram",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="tunnel_mix",le="0.5"} 1',
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="tunnel_mix",le="5"} 2',
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="tunnel_mix",le="10"} 5',
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="tunnel_mix",le="+Inf"} 6',
        'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="tunnel_mix"} 60',
        'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="tunnel_mix"} 6',
        "",
    ])
    stats = tunnel_stats(text, {"tunnel_mix": "mix"})
    mix = stats["mix"]
    assert mix.codes[2] == 6 and mix.codes[5] == 4 and mix.upstream_errors == 4 and mix.bytes_out == 1000
    assert mix.buckets[0] == 2 and mix.buckets[1] == 3 and sum(mix.buckets) == 6 and mix.latency_sum == 0.06
    tunnel = Tunnel.from_raw({"name": "mix", "backends": ["http://127.0.0.1:3000", "http://127.0.0.1:3001"]})
    health = backend_health("tunnel_mix::127.0.0.1:3000::health_flags::healthy\n"
                            "tunnel_mix::127.0.0.1:3001::health_flags::/failed_active_hc\n",
                            [tunnel], {"tunnel_mix": "mix"})
    assert [(h.backend, h.up) for h in health] == [("http://127.0.0.1:3000", True), ("http://127.0.0.1:3001", False)]
