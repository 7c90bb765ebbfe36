"""Shared runtime state of one engine instance: current router, settings, hooks, connections."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import Settings

if TYPE_CHECKING:
    from .protocol import ClientProtocol
    from .router import Router


@dataclass(eq=False)  # no slots: Cython compiles it as an extension type (state.pxd)
class ProxyState:
    """What every client connection reads; `router` is replaced whole on apply (atomic swap)."""

    loop: asyncio.AbstractEventLoop
    settings: Settings
    router: "Router"
    hook: Any = None
    hook_on: bool = False
    closing: bool = False
    conns: set["ClientProtocol"] = field(default_factory=set)
    tasks: set["asyncio.Task[None]"] = field(default_factory=set)  # strong refs to connect tasks
    connections_total: int = 0
    requests_total: int = 0
    rejected_total: int = 0
    upstream_errors: int = 0
    log: Any = None
    h2: Any = None  # h2_upstream.Upstreams when HTTP/2 is on: the pools HTTP/2 streams use
    tracer: Any = None  # an OpenTelemetry tracer when the daemon traces (request spans), else None
    h2_accept: Any = None  # h2_protocol.accept_h2 when HTTP/2 is on: takes a connection whose ALPN chose h2
    via: bool = field(init=False, default=False)  # settings.via, read per request

    def __post_init__(self) -> None:
        self.via = bool(self.settings.via)
