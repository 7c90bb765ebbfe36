"""The record of one HTTP/1.1 request and its progress: shared by the client and upstream sides.

Its own module so that both compiled hot-path modules (protocol.py, upstream.py) can type it: the
upstream side reads its fields as C fields instead of attribute lookups (protocol.py cimports
upstream.pxd, so upstream.pxd could not cimport protocol.pxd back). `Downstream`, the client
protocol's base, is here for the same reason: the upstream side calls it in C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from .balancer import BackendState
    from .router import Route
    from .upstream import UpstreamProtocol


class Req:
    """One parsed request and its progress through the exchange."""

    __slots__ = (
        "url", "headers", "method", "http11", "keep_alive", "upgrade", "is_head", "head_done",
        "complete", "body", "body_size", "chunked", "discard", "route", "backend", "tried",
        "head_parts", "local", "t_sent", "t0", "status", "span",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.http11 = True
        self.keep_alive = True
        self.upgrade = False
        self.is_head = False
        self.head_done = False
        self.complete = False
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.chunked = False
        self.discard = False
        self.route: Route | None = None
        self.backend: BackendState | None = None
        self.tried: list[BackendState] | None = None
        self.head_parts: list[bytes] = []
        self.local = False
        self.t_sent = 0.0  # when the whole request was with the backend (its first-byte timer)
        self.t0 = 0.0  # when the request head began (monotonic): latency metrics
        self.status = 0  # status of the final response head sent, 0 while none
        self.span = None  # its trace span, when tracing samples it


class Downstream:
    """What the upstream side of an exchange uses of its client connection: the client's transport,
    its count of bytes sent, and the end of a response. `protocol.ClientProtocol` is the one
    implementation; a base class so the compiled upstream module reaches these without a Python
    attribute lookup or call."""

    transport: "asyncio.Transport"
    nout: int

    def response_done(self, up: "UpstreamProtocol", keep_alive: bool) -> None:
        """The upstream response was fully relayed (`keep_alive`: the backend may be reused)."""
        raise NotImplementedError
