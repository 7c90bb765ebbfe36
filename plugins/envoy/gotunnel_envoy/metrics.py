"""Envoy's statistics relabelled to tunnel names: per-cluster stats from the admin endpoint.

Each tunnel is one cluster (`tunnel_<name>`), so the cluster's counters are the tunnel's: the
status class of each response (`upstream_rq_<N>xx`: Envoy's own 503 for a failed connection,
turned into the 502 page by a local-reply mapper, is charged to the cluster as a 5xx),
`upstream_rq_time` (the backend's response time, in ms, with bucket bounds that include
gotunnel's), failed connections and resets, bytes on the backend side and requests in flight.
Backend health comes from `/clusters` (`health_flags`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping
from urllib.parse import quote

from gotunnel_core.metrics.stats import BUCKETS, BackendHealth, TunnelStats
from gotunnel_core.models import Tunnel

#: The stats read at a scrape (Envoy's filter is a regex over stat names).
STATS_PATH = "/stats?format=prometheus&filter=" + quote(
    r"^cluster\.tunnel_[^.]*\.(upstream_rq_[1-5]xx|upstream_rq_time|upstream_rq_active|upstream_cx_connect_fail"
    r"|upstream_rq_rx_reset|upstream_cx_rx_bytes_total|upstream_cx_tx_bytes_total)$", safe="")
_ENVOY_BOUNDS_MS = {bound: repr(float(bound * 1000)) for bound in BUCKETS}


def tunnel_stats(text: str, clusters: Mapping[str, str]) -> dict[str, TunnelStats]:
    """Parse the Prometheus text of STATS_PATH; `clusters` maps cluster name -> tunnel name."""
    from prometheus_client.parser import text_string_to_metric_families

    stats = {name: TunnelStats() for name in clusters.values()}
    cumulative: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            tunnel = clusters.get(sample.labels.get("envoy_cluster_name", ""))
            if tunnel is None:
                continue
            name = sample.name
            while name.endswith("_total"):  # the parser adds `_total` to counters; Envoy has its own too
                name = name[:-6]
            s, value = stats[tunnel], int(sample.value) if name[-4:] != "_sum" else 0
            if name == "envoy_cluster_upstream_rq_xx":
                cls = int(sample.labels.get("envoy_response_code_class", "0"))
                if 1 <= cls <= 5:
                    s.codes[cls] += value
            elif name == "envoy_cluster_upstream_rq_time_bucket":
                cumulative.setdefault(tunnel, {})[repr(float(sample.labels["le"]))] = sample.value
            elif name == "envoy_cluster_upstream_rq_time_sum":
                s.latency_sum = sample.value / 1000.0
            elif name in ("envoy_cluster_upstream_cx_connect_fail", "envoy_cluster_upstream_rq_rx_reset"):
                s.upstream_errors += value
            elif name == "envoy_cluster_upstream_cx_tx_bytes":
                s.bytes_in += value
            elif name == "envoy_cluster_upstream_cx_rx_bytes":
                s.bytes_out += value
            elif name == "envoy_cluster_upstream_rq_active":
                s.active = value
    for tunnel, buckets in cumulative.items():
        previous, counts = 0.0, []
        for bound in BUCKETS:
            upto = buckets.get(_ENVOY_BOUNDS_MS[bound], previous)
            counts.append(int(upto - previous))
            previous = upto
        counts.append(int(buckets.get(repr(float("inf")), previous) - previous))
        stats[tunnel].buckets = counts
    return stats


def backend_health(text: str, tunnels: Iterable[Tunnel], clusters: Mapping[str, str]) -> list[BackendHealth]:
    """`/clusters` lines `CLUSTER::HOST:PORT::health_flags::FLAGS` -> one verdict per backend."""
    healthy: dict[tuple[str, str], bool] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags" and parts[0] in clusters:
            healthy[(clusters[parts[0]], parts[1])] = parts[3].strip() == "healthy"
    out: list[BackendHealth] = []
    for tunnel in tunnels:
        for backend in tunnel.backends:
            up: Any = healthy.get((tunnel.name, backend.address))
            out.append(BackendHealth(tunnel.name, backend.url, True if up is None else bool(up)))
    return out
