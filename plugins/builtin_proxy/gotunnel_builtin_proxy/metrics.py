"""Native request counting: one call per finished request, into the route's `RouteCounters`.

Each `Route` carries the counters of its tunnel (kept by the engine across route changes), so
counting needs no lookup: the client side calls `RouteCounters.count` once when an exchange ends,
with the status, the latency and the byte counts already at hand (HTTP/1.1: `ClientProtocol`,
which reuses the clock read it makes anyway for its idle timer; HTTP/2: `record_h2`). One list
slot per (status class, latency bucket) pair makes the status count and the histogram a single
increment, and the bucket is found by walking the bounds from the fastest (a proxied request
usually stops at the first). The engine turns the counters into the core's `TunnelStats` at a
scrape, where requests in flight (the active-connections gauge) are counted from the open
connections instead of on every request. A request that ended without a status (the client left
first) counts as 499, as nginx logs it.

This module is part of the compiled hot path (see protocol.py): `metrics.pxd` makes the counters
C fields and `count` a C call from the compiled client protocol.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from gotunnel_core.metrics.stats import BUCKETS, CLASSES, TunnelStats

from .tracing import end_request_span

if TYPE_CHECKING:
    from .h2_protocol import H2Stream

#: Latency slots per status class: the buckets and +Inf.
SLOTS = len(BUCKETS) + 1


class RouteCounters:
    """Cumulative counters of one tunnel on this engine process (the hot path's shape)."""

    __slots__ = ("counts", "latency_sum", "bytes_in", "bytes_out", "upstream_errors")

    def __init__(self) -> None:
        self.counts = [0] * (len(CLASSES) * SLOTS)  # [status // 100 * SLOTS + latency bucket]
        self.latency_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_errors = 0

    def count(self, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request that took `seconds` (0 as `status`: none was sent)."""
        cls = status // 100 if status else 4  # none sent: 499, as nginx logs a client that left
        if not 0 < cls < 10:
            cls = 0  # out of range (a backend's status 1000 or -1): counted, under no class
        slot = cls * SLOTS
        for bound in BUCKETS:  # the first bound >= seconds, as bisect_left finds it
            if seconds <= bound:
                break
            slot += 1
        self.counts[slot] += 1
        self.latency_sum += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def snapshot(self, active: int) -> TunnelStats:
        """The core's engine-neutral form, with `active` requests in flight now."""
        counts = self.counts
        stats = TunnelStats(active=active)
        stats.codes = [sum(counts[c * SLOTS:(c + 1) * SLOTS]) for c in range(len(CLASSES))]
        stats.buckets = [sum(counts[b::SLOTS]) for b in range(SLOTS)]
        stats.latency_sum = self.latency_sum
        stats.bytes_in = self.bytes_in
        stats.bytes_out = self.bytes_out
        stats.upstream_errors = self.upstream_errors
        return stats


def record_h2(stream: "H2Stream") -> None:
    """Count a routed HTTP/2 stream that ended (bodies only: frame overhead is the connection's)."""
    stream.route.stats.count(stream.status, monotonic() - stream.t0, stream.received, stream.sent)  # type: ignore[union-attr]
    if stream.span is not None:
        end_request_span(stream)
