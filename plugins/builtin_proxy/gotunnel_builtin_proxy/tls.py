"""TLS for the HTTPS listener: one SSLContext per certificate, picked per handshake by SNI."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from gotunnel_core.engine import EngineValidationError
from gotunnel_core.models import CertFiles, RouteTable

from .router import tunnel_name_of

if TYPE_CHECKING:
    from .router import Router


def _server_context(http2: bool = False) -> ssl.SSLContext:
    """Modern server defaults: TLS 1.2+, h2 (when on) and HTTP/1.1 by ALPN, no compression or renegotiation.

    Every per-certificate context carries the same ALPN list: OpenSSL selects the protocol
    with the context the SNI callback switched to.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return ctx


@dataclass(frozen=True, slots=True)
class CertSnapshot:
    """Contexts by tunnel name plus the default one, for one route table."""

    by_name: dict[str, ssl.SSLContext] = field(default_factory=dict)
    default: ssl.SSLContext | None = None


class CertStore:
    """Loads certificate/key pairs into contexts, re-reading a pair only when its files changed."""

    def __init__(self, http2: bool = False) -> None:
        self.http2 = http2
        self._cache: dict[tuple[str, str], tuple[tuple[int, ...], ssl.SSLContext]] = {}

    def context_for(self, files: CertFiles) -> ssl.SSLContext:
        try:
            a, b = os.stat(files.cert), os.stat(files.key)
        except OSError as exc:
            raise EngineValidationError(f"cannot read certificate files {files.cert}, {files.key}: {exc}") from None
        stamp = (a.st_mtime_ns, a.st_size, a.st_ino, b.st_mtime_ns, b.st_size, b.st_ino)
        key = (files.cert, files.key)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        ctx = _server_context(self.http2)
        try:
            ctx.load_cert_chain(files.cert, files.key)
        except (OSError, ssl.SSLError) as exc:
            raise EngineValidationError(f"cannot load certificate {files.cert} with key {files.key}: {exc}") from None
        self._cache[key] = (stamp, ctx)
        return ctx

    def snapshot(self, table: RouteTable) -> CertSnapshot:
        """Load (or reuse) every certificate of `table`; raises before anything is swapped."""
        by_name = {name: self.context_for(files) for name, files in table.certs.items()}
        default = self.context_for(table.default_cert) if table.default_cert is not None else None
        if default is None and by_name:
            default = next(iter(by_name.values()))
        live = {(f.cert, f.key) for f in table.certs.values()}
        if table.default_cert is not None:
            live.add((table.default_cert.cert, table.default_cert.key))
        for key in list(self._cache):
            if key not in live:
                del self._cache[key]
        return CertSnapshot(by_name, default)


class SniSelector:
    """Owns the listener's base context; its SNI callback switches to the tunnel's context.

    The tunnel the handshake named is stored on the SSL object (`gotunnel_sni`) so the
    request side can answer 421 when Host names another tunnel.
    """

    def __init__(self, get_router: Callable[[], "Router"], snapshot: CertSnapshot, http2: bool = False) -> None:
        self.get_router = get_router
        self.snapshot = snapshot
        self.base = _server_context(http2)
        self.base.sni_callback = self._on_sni

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        snap = self.snapshot
        if server_name is None:
            if snap.default is not None:
                sslobj.context = snap.default
            return None
        name = tunnel_name_of(server_name)
        route = self.get_router().by_name(name) if name else None
        ctx = None
        if route is not None:
            ctx = snap.by_name.get(route.name)
        if ctx is None:
            ctx = snap.default
        if ctx is not None:
            sslobj.context = ctx
        try:
            sslobj.gotunnel_sni = route.name if route is not None else ""  # type: ignore[attr-defined]
        except AttributeError:
            pass
        return None
