"""`gotunnel top`: a live view of the tunnels computed from two successive metrics scrapes.

It reads the same Prometheus text as the endpoint (`metrics` daemon operation), so it works on
every engine: rates are differences of counters over the interval, p99 comes from the latency
histogram's bucket differences (interpolated within a bucket, like PromQL's histogram_quantile).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .metrics.collector import parse_text


@dataclass
class Sample:
    """One scrape, by tunnel: counters, histogram buckets, backend health and certificate expiry."""

    at: float
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # tunnel -> class -> count
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # tunnel -> le -> cumulative
    active: dict[str, float] = field(default_factory=dict)
    backends: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    expiry: dict[str, float] = field(default_factory=dict)
    engine: str = ""

    @classmethod
    def parse(cls, text: str, at: float | None = None) -> "Sample":
        sample = cls(time.time() if at is None else at)
        for (name, label_items), value in parse_text(text).items():
            labels = dict(label_items)
            tunnel = labels.get("tunnel", "")
            if name == "gotunnel_requests_total":
                sample.requests.setdefault(tunnel, {})[labels["code"]] = value
            elif name == "gotunnel_request_duration_seconds_bucket":
                sample.buckets.setdefault(tunnel, {})[float(labels["le"])] = value
            elif name == "gotunnel_active_connections":
                sample.active[tunnel] = value
            elif name == "gotunnel_backend_up":
                sample.backends.setdefault(tunnel, []).append((labels["backend"], value >= 1))
            elif name == "gotunnel_certificate_expiry_timestamp_seconds":
                sample.expiry[labels["name"]] = value
            elif name == "gotunnel_engine_info":
                sample.engine = labels.get("engine", "")
        return sample


@dataclass(frozen=True)
class Row:
    """What `top` shows for one tunnel."""

    tunnel: str
    rps: float
    error_rate: float | None  # 5xx share of the interval's requests; None without requests
    p99: float | None  # seconds; math.inf when beyond the last bucket
    active: float | None
    backends_up: int
    backends: int
    cert_days: float | None


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram given as {upper bound: cumulative count}; None when empty."""
    bounds = sorted(cumulative)
    if not bounds:
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return math.inf


def rows(before: Sample, after: Sample) -> list[Row]:
    """Per-tunnel figures over the interval between two samples."""
    span = max(after.at - before.at, 1e-6)
    out = []
    for tunnel in sorted(after.requests):
        now, then = after.requests[tunnel], before.requests.get(tunnel, {})
        delta = {cls: now.get(cls, 0.0) - then.get(cls, 0.0) for cls in now}
        total = sum(delta.values())
        buckets_now, buckets_then = after.buckets.get(tunnel, {}), before.buckets.get(tunnel, {})
        diff = {le: buckets_now[le] - buckets_then.get(le, 0.0) for le in buckets_now}
        backends = after.backends.get(tunnel, [])
        expiry = after.expiry.get(tunnel)
        out.append(Row(
            tunnel=tunnel,
            rps=total / span,
            error_rate=(delta.get("5xx", 0.0) / total) if total > 0 else None,
            p99=quantile(0.99, diff),
            active=after.active.get(tunnel),
            backends_up=sum(1 for _, up in backends if up),
            backends=len(backends),
            cert_days=None if expiry is None else (expiry - after.at) / 86400,
        ))
    return out


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return ">10 s"
    return f"{seconds * 1000:.1f} ms"


def table(data: list[Row], engine: str, interval: float) -> Any:
    """The rich Table for one refresh."""
    from rich.table import Table

    view = Table(title=f"gotunnel top: engine {engine or '?'}, every {interval:g} s", expand=False)
    for title, justify in (("tunnel", "left"), ("req/s", "right"), ("errors", "right"), ("p99", "right"),
                           ("active", "right"), ("backends", "right"), ("cert", "right")):
        view.add_column(title, justify=justify)  # type: ignore[arg-type]
    for row in data:
        errors = "-" if row.error_rate is None else f"{row.error_rate * 100:.1f}%"
        if row.error_rate:
            errors = f"[red]{errors}[/red]"
        health = f"{row.backends_up}/{row.backends} up"
        if row.backends_up < row.backends:
            health = f"[red]{health}[/red]"
        cert = "-" if row.cert_days is None else f"{row.cert_days:.0f} d"
        if row.cert_days is not None and row.cert_days < 7:
            cert = f"[yellow]{cert}[/yellow]"
        view.add_row(row.tunnel, f"{row.rps:.1f}", errors, _ms(row.p99),
                     "-" if row.active is None else f"{row.active:.0f}", health, cert)
    if not data:
        view.caption = "no tunnels"
    return view
