"""Host/SNI name -> route lookup: exact names and one-label wildcards, O(1) dict probes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from gotunnel_core.models import HOST_HEADER_MODES, RouteTable, Tunnel

from .metrics import RouteCounters

if TYPE_CHECKING:
    from .balancer import Balancer, BackendState

_SUFFIXES = ((".localhost", 10), (".local", 6))
_CACHE_MAX = 4096


def _header_block(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """Pre-render `name: value` pairs as header lines (values were validated as printable ASCII)."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in pairs)


@dataclass(eq=False)  # no slots: Cython compiles it as an extension type (router.pxd)
class Route:
    """Everything the hot path needs about one tunnel, precomputed once per table."""

    tunnel: Tunnel
    balancer: "Balancer"
    name: str = ""
    req_add: bytes = b""
    req_add_names: frozenset[bytes] = frozenset()
    req_remove: frozenset[bytes] = frozenset()
    resp_add: bytes = b""
    resp_drop: frozenset[bytes] = frozenset()  # names removed or replaced in responses
    upstream_timeout: float = 60.0  # seconds to the backend's first response byte, then 504
    stats: RouteCounters = field(default_factory=RouteCounters)  # the engine's counters of this tunnel
    upstream_host: bytes = b""  # a literal host_header; empty: the client's Host (or the backend's)
    host_from_backend: bool = False  # host_header = "backend": each backend's own host:port
    https: bool = True  # the tunnel's own flags, read per request without going through `tunnel`
    redirect_https: bool = False

    @classmethod
    def build(cls, tunnel: Tunnel, balancer: "Balancer", upstream_timeout: float = 60.0) -> "Route":
        req, resp = tunnel.headers.request, tunnel.headers.response
        req_add_names = frozenset(n.lower().encode() for n, _ in req.add)
        return cls(
            tunnel=tunnel,
            balancer=balancer,
            upstream_timeout=upstream_timeout,
            name=tunnel.name,
            req_add=_header_block(req.add),
            req_add_names=req_add_names,
            req_remove=frozenset(n.lower().encode() for n in req.remove) | req_add_names,
            resp_add=_header_block(resp.add),
            resp_drop=frozenset(n.lower().encode() for n in resp.remove)
            | frozenset(n.lower().encode() for n, _ in resp.add),
            upstream_host=b"" if tunnel.host_header in HOST_HEADER_MODES else tunnel.host_header.encode("ascii"),
            host_from_backend=tunnel.host_header == "backend",
            https=tunnel.https,
            redirect_https=tunnel.redirect_https,
        )

    def upstream_authority(self, backend: "BackendState", client_host: bytes) -> bytes:
        """The Host (HTTP/2: `:authority`) `backend` receives for a request sent with `client_host`."""
        if self.host_from_backend:
            return backend.host_header
        return self.upstream_host or client_host


def tunnel_name_of(host: str) -> str | None:
    """`Foo.Local.:8443` -> `foo`; None when the host is under neither suffix."""
    host = host.lower()
    if host.startswith("["):
        return None
    head, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = head
    if host.endswith("."):
        host = host[:-1]
    for suffix, n in _SUFFIXES:
        if host.endswith(suffix) and len(host) > n:
            return host[:-n]
    return None


@dataclass  # no slots: Cython compiles it as an extension type (router.pxd)
class Router:
    """Immutable routing snapshot; the engine swaps the whole object on `apply`."""

    table: RouteTable
    exact: dict[str, Route] = field(default_factory=dict)
    wildcard: dict[str, Route] = field(default_factory=dict)
    #: Raw Host value -> route (or None), filled by `lookup`; read directly on the hot path.
    by_host: dict[bytes, Route | None] = field(default_factory=dict)
    hop_id: bytes = b""  # this gotunnel's loop marker (gotunnel_core.loops)
    hop_line: bytes = b""  # the header line sent upstream with every request
    hop_end: bytes = b""  # CRLF + hop_line + CRLF: the end of a request head that adds nothing else

    @classmethod
    def build(cls, table: RouteTable, routes: Mapping[str, Route]) -> "Router":
        from gotunnel_core.loops import HOP_HEADER

        router = cls(table)
        router.hop_id = table.hop_id.encode("ascii")
        router.hop_line = f"{HOP_HEADER}: {table.hop_id}\r\n".encode("ascii")
        router.hop_end = b"\r\n" + router.hop_line + b"\r\n"
        for name, route in routes.items():
            if name.startswith("*."):
                router.wildcard[name[2:]] = route
            else:
                router.exact[name] = route
        return router

    def by_name(self, name: str) -> Route | None:
        """Route for a normalised tunnel-relative name (`x.myapp` may hit wildcard `*.myapp`)."""
        route = self.exact.get(name)
        if route is None:
            _, dot, rest = name.partition(".")
            if dot:
                route = self.wildcard.get(rest)
        return route

    def lookup(self, host: bytes) -> Route | None:
        """Route for a raw Host header value; cached per distinct value."""
        try:
            return self.by_host[host]
        except KeyError:
            pass
        name = tunnel_name_of(host.decode("latin-1"))
        route = None if name is None else self.by_name(name)
        if len(self.by_host) >= _CACHE_MAX:
            self.by_host.clear()
        self.by_host[host] = route
        return route
