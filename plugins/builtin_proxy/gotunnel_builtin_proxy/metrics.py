"""Native request counting: one call per finished request, into the route's `TunnelStats`.

Each `Route` carries the `TunnelStats` of its tunnel (kept by the engine across route changes),
so counting needs no lookup: the client side calls `record_h1` / `record_h2` once when an exchange
ends and the status, the start time and the byte counts are already at hand. A request that
ended without a status (the client went away first) counts as 499, as nginx logs it.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .h2_protocol import H2Stream
    from .protocol import ClientProtocol, Req


def record_h1(conn: "ClientProtocol", req: "Req") -> None:
    """Count `req` (routed, now finished or cut off) for its tunnel; reset the connection's byte counts."""
    stats = req.route.stats  # type: ignore[union-attr]
    stats.observe(req.status or 499, monotonic() - req.t0, conn.nin, conn.nout)
    stats.active -= 1  # type: ignore[operator]
    conn.nin = conn.nout = 0


def record_h2(stream: "H2Stream") -> None:
    """Count a routed HTTP/2 stream that ended (bodies only: frame overhead is the connection's)."""
    stats = stream.route.stats  # type: ignore[union-attr]
    stats.observe(stream.status or 499, monotonic() - stream.t0, stream.received, stream.sent)
    stats.active -= 1  # type: ignore[operator]
