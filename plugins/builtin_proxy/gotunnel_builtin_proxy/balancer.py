"""Backends of a tunnel: smooth weighted round robin (nginx-style) over the healthy ones."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from gotunnel_core.models import Backend, HealthCheck

if TYPE_CHECKING:
    from .h2_upstream import H1Pool
    from .upstream import Pool

#: How long a backend that refused a connection sits out when its tunnel has no active check.
PASSIVE_EJECT_SECONDS = 10.0


@dataclass(eq=False)  # no slots: Cython compiles it as an extension type (balancer.pxd)
class BackendState:
    """Runtime state of one backend of one tunnel: health, SWRR weight, connection pool."""

    backend: Backend
    pool: "Pool"
    health: HealthCheck | None = None
    prefix: bytes = b""
    host_header: bytes = b""  # `host:port`: the Host sent upstream when a tunnel's host_header is "backend"
    current: int = 0
    healthy: bool = True  # verdict of active checks (always True without checks)
    ejected_until: float = 0.0  # passive ejection deadline (monotonic), 0 = not ejected
    successes: int = 0
    failures: int = 0
    last_error: str = ""
    #: An inspected tunnel's own recording pool for HTTP/2 clients (`recording.RecordingH1Pool`);
    #: None otherwise: HTTP/2 streams then use the shared pools by address.
    recorded_h1: "H1Pool | None" = None

    def __post_init__(self) -> None:
        self.prefix = self.backend.path.encode("ascii")
        self.host_header = self.backend.address.encode("ascii")

    def available(self) -> bool:
        if not self.healthy:
            return False
        if self.ejected_until and time.monotonic() < self.ejected_until:
            return False
        return True


@dataclass(eq=False)  # no slots: Cython compiles it as an extension type (balancer.pxd)
class Balancer:
    """Picks a backend per request; `pick` is O(backends) and allocation-free."""

    tunnel_name: str
    states: Sequence[BackendState]
    single: BackendState | None = field(default=None)

    def __post_init__(self) -> None:
        self.single = self.states[0] if len(self.states) == 1 else None

    def pick(self, exclude: Sequence[BackendState] = ()) -> BackendState | None:
        """Smooth weighted round robin over available backends not in `exclude`."""
        single = self.single
        if single is not None:
            return single if single not in exclude and single.available() else None
        best = None
        total = 0
        for s in self.states:
            if s in exclude or not s.available():
                continue
            s.current += s.backend.weight
            total += s.backend.weight
            if best is None or s.current > best.current:
                best = s
        if best is not None:
            best.current -= total
        return best

    def connect_failed(self, state: BackendState, reason: str) -> None:
        """Passive ejection: a backend that refused a connection stops getting requests for a while.

        A lone backend without an active check is never ejected (there is nothing to fail over to;
        the client gets a 502 naming it instead).
        """
        state.last_error = reason
        if len(self.states) > 1 or state.health is not None:
            state.ejected_until = time.monotonic() + (
                state.health.interval * state.health.healthy_threshold if state.health else PASSIVE_EJECT_SECONDS
            )
