"""The daemon's Prometheus registry: one custom collector over the latest `MetricsSnapshot`.

The engines keep plain integers (no prometheus-client objects on the request path); at a scrape
the daemon takes a snapshot (`TunnelManager.metrics_snapshot`) and this collector turns it into
metric families. Reload durations are a real `Histogram`, observed by the manager around every
`engine.apply`, whatever the engine. The same text goes to the HTTP endpoint and `gotunnel metrics`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .stats import BUCKETS, CLASSES, BackendHealth, EngineStats

#: Content type of the text exposition format the endpoint serves.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricsSnapshot:
    """Everything one scrape shows, gathered by the daemon in one go."""

    engine: str
    stats: EngineStats
    tunnels: list[str]
    backends: list[BackendHealth]
    #: (certificate name, expiry as a Unix timestamp)
    certificates: list[tuple[str, float]] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)


class SnapshotCollector(Collector):
    """Yields gotunnel's metric families from the snapshot last stored in `self.snapshot`."""

    def __init__(self) -> None:
        self.snapshot: MetricsSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        engine = snap.engine
        requests = CounterMetricFamily("gotunnel_requests", "Requests answered, by tunnel and status class "
                                       "(an engine's own 502/503 counts for the tunnel it was meant for).",
                                       labels=["tunnel", "code"])
        latency = HistogramMetricFamily("gotunnel_request_duration_seconds",
                                        "Time from the request head to the end of the response.", labels=["tunnel"])
        errors = CounterMetricFamily("gotunnel_upstream_errors", "Failed attempts to get a response from a backend "
                                     "(refused, reset, invalid or cut-off answers).", labels=["tunnel"])
        bytes_in = CounterMetricFamily("gotunnel_received_bytes", "Bytes received from clients.", labels=["tunnel"])
        bytes_out = CounterMetricFamily("gotunnel_sent_bytes", "Bytes sent to clients.", labels=["tunnel"])
        active = GaugeMetricFamily("gotunnel_active_connections", "Client connections in an exchange with the "
                                   "tunnel now (requests in flight, upgraded websockets).", labels=["tunnel"])
        for name in sorted(snap.stats.tunnels):
            stats = snap.stats.tunnels[name]
            for index in range(1, 6):  # 1xx ... 5xx; "none" and out-of-range statuses are no class
                requests.add_metric([name, CLASSES[index]], stats.codes[index])
            cumulative, running = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), stats.buckets):
                running += count
                cumulative.append((_le(bound), running))
            latency.add_metric([name], cumulative, stats.latency_sum)
            errors.add_metric([name], stats.upstream_errors)
            bytes_in.add_metric([name], stats.bytes_in)
            bytes_out.add_metric([name], stats.bytes_out)
            if stats.active is not None:
                active.add_metric([name], stats.active)
        yield from (requests, latency, errors, bytes_in, bytes_out, active)

        restarts = CounterMetricFamily("gotunnel_engine_restarts", "Restarts of the engine after a crash "
                                       "(builtin: of its worker processes).", labels=["engine"])
        restarts.add_metric([engine], snap.stats.restarts)
        yield restarts
        info = GaugeMetricFamily("gotunnel_engine_info", "The engine serving the tunnels (always 1).", labels=["engine"])
        info.add_metric([engine], 1)
        yield info
        tunnels = GaugeMetricFamily("gotunnel_tunnels", "Tunnels in the desired state.")
        tunnels.add_metric([], len(snap.tunnels))
        yield tunnels
        up = GaugeMetricFamily("gotunnel_backend_up", "1 when the engine would send the tunnel's requests to the "
                               "backend now, else 0.", labels=["tunnel", "backend"])
        for health in sorted(snap.backends, key=lambda h: (h.tunnel, h.backend)):
            up.add_metric([health.tunnel, health.backend], 1 if health.up else 0)
        yield up
        certs = GaugeMetricFamily("gotunnel_certificate_expiry_timestamp_seconds",
                                  "When each certificate issued by gotunnel's CA expires (Unix time).", labels=["name"])
        for name, expiry in sorted(snap.certificates):
            certs.add_metric([name], expiry)
        yield certs


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class DaemonMetrics:
    """The daemon's registry: the snapshot collector plus the reload-duration histogram."""

    def __init__(self, engine: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector()
        self.registry.register(self.collector)
        self.reload_seconds = Histogram(
            "gotunnel_engine_reload_duration_seconds", "Time the engine took to validate and apply a new route table.",
            ["engine"], registry=self.registry, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        self.reload_seconds.labels(engine)  # present (with zero counts) before the first reload
        self.engine = engine
        self._lock = threading.Lock()  # the HTTP endpoint renders on its own threads

    def observe_reload(self, seconds: float) -> None:
        self.reload_seconds.labels(self.engine).observe(seconds)

    def render(self, snapshot: MetricsSnapshot) -> bytes:
        """The text exposition of `snapshot` and the reload histogram."""
        with self._lock:
            self.collector.snapshot = snapshot
            return generate_latest(self.registry)


#: A sample's key in `parse_text`: its name and its sorted label items.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_text(text: str) -> dict[SampleKey, float]:
    """Samples of an exposition text: {(name, sorted label items): value}; for tests and `top`."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
