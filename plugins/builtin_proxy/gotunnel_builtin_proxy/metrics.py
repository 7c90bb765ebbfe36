"""Native request counting: one call per finished request, into the route's `RouteCounters`.

Each `Route` carries the counters of its tunnel (kept by the engine across route changes), so
counting needs no lookup: the client side calls `record_h1` / `record_h2` once when an exchange
ends, with the status, the start time and the byte counts already at hand. One list slot per
(status class, latency bucket) pair makes the status count and the histogram a single increment;
the engine turns the counters into the core's `TunnelStats` at a scrape, where requests in flight
(the active-connections gauge) are counted from the open connections instead of on every request.
A request that ended without a status (the client left first) counts as 499, as nginx logs it.
"""

from __future__ import annotations

from bisect import bisect_left
from time import monotonic
from typing import TYPE_CHECKING

from gotunnel_core.metrics.stats import BUCKETS, CLASSES, TunnelStats

from .tracing import end_request_span

if TYPE_CHECKING:
    from .h2_protocol import H2Stream
    from .protocol import ClientProtocol, Req

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

    def count(self, status: int, t0: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request that started at `t0` (monotonic)."""
        seconds = monotonic() - t0
        self.counts[(status or 499) // 100 * SLOTS + bisect_left(BUCKETS, seconds)] += 1
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


def record_h1(conn: "ClientProtocol", req: "Req") -> None:
    """Count `req` (routed, now finished or cut off) for its tunnel; reset the connection's byte counts.

    `RouteCounters.count` written out in place: this runs once per HTTP/1.1 request, and a method
    call would cost a frame more.
    """
    counters = req.route.stats  # type: ignore[union-attr]
    seconds = monotonic() - req.t0
    counters.counts[(req.status or 499) // 100 * SLOTS + bisect_left(BUCKETS, seconds)] += 1
    counters.latency_sum += seconds
    counters.bytes_in += conn.nin
    counters.bytes_out += conn.nout
    conn.nin = conn.nout = 0
    if req.span is not None:
        end_request_span(req)


def record_h2(stream: "H2Stream") -> None:
    """Count a routed HTTP/2 stream that ended (bodies only: frame overhead is the connection's)."""
    stream.route.stats.count(stream.status, stream.t0, stream.received, stream.sent)  # type: ignore[union-attr]
    if stream.span is not None:
        end_request_span(stream)
