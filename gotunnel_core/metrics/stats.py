"""Engine-neutral request statistics: what every engine reports per tunnel, in one shape.

The builtin engine fills `TunnelStats` natively on its request path (one `observe` call per
request), nginx and Caddy through their access-log stream (`logstream.py`), Envoy from its admin
stats. The Prometheus collector (`collector.py`) turns an `EngineStats` into metric families, so a
dashboard does not care which engine produced them.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the latency histogram. A subset of Envoy's default bucket bounds
#: (0.5 ms ... 1 h), so Envoy's own histogram maps onto these buckets without interpolation.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Status classes as labels, indexed by `status // 100`; "none" and the slots past 5xx (a backend's
#: out-of-range status such as 999) are counted but not shown as a class.
CLASSES: tuple[str, ...] = ("none", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx")


@dataclass(slots=True, eq=False)
class TunnelStats:
    """Cumulative counters of one tunnel since the engine started.

    `codes[i]` counts responses of class `CLASSES[i]`; `buckets[i]` counts latencies within
    `BUCKETS[i]` (not cumulative; the last slot is +Inf). `active` is None when the engine
    cannot tell (nginx: no per-host live gauge).
    """

    codes: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    upstream_errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    active: int | None = 0

    def observe(self, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request (the builtin engine's hot path: keep it lean)."""
        cls = status // 100
        self.codes[cls if 0 < cls < 10 else 0] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    @property
    def requests(self) -> int:
        return sum(self.codes)

    def merge(self, other: "TunnelStats") -> None:
        """Add `other` into this (workers of one engine, summed)."""
        for i, n in enumerate(other.codes):
            self.codes[i] += n
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n
        self.latency_sum += other.latency_sum
        self.upstream_errors += other.upstream_errors
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        if self.active is not None and other.active is not None:
            self.active += other.active

    def to_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "buckets": list(self.buckets), "latency_sum": self.latency_sum,
                "upstream_errors": self.upstream_errors, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "active": self.active}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TunnelStats":
        stats = cls()
        if len(data.get("codes", ())) == len(CLASSES):
            stats.codes = [int(n) for n in data["codes"]]
        if len(data.get("buckets", ())) == len(BUCKETS) + 1:
            stats.buckets = [int(n) for n in data["buckets"]]
        stats.latency_sum = float(data.get("latency_sum", 0.0))
        stats.upstream_errors = int(data.get("upstream_errors", 0))
        stats.bytes_in = int(data.get("bytes_in", 0))
        stats.bytes_out = int(data.get("bytes_out", 0))
        active = data.get("active")
        stats.active = None if active is None else int(active)
        return stats


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Whether the engine would send a tunnel's requests to one backend right now."""

    tunnel: str
    backend: str
    up: bool


@dataclass
class EngineStats:
    """What an engine reports at a scrape: per-tunnel counters, backend health, restarts."""

    tunnels: dict[str, TunnelStats] = field(default_factory=dict)
    #: None: the engine does not know; the daemon then probes the backends itself (TCP connect).
    backends: list[BackendHealth] | None = None
    restarts: int = 0

    def tunnel(self, name: str) -> TunnelStats:
        stats = self.tunnels.get(name)
        if stats is None:
            stats = self.tunnels[name] = TunnelStats()
        return stats
