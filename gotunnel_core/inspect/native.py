"""Recording inside the engine: what an engine that records inspected tunnels itself gets from the core.

An engine whose `Engine.inspect_mode` says `native` receives inspected tunnels unchanged (real
backends, no relay) and an `InspectRecorder` in `EngineContext.recorder`. For each connection it
opens to a backend of an inspected tunnel it asks the recorder for a pair of observers and shows
them every byte it writes to that connection (`RequestObserver.feed`) and every byte it reads from
it (`ResponseObserver.feed`, then `ResponseObserver.close` when the connection ends): the bytes the
relay would have seen, so the records are the same under both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # observe imports httptools: engines import this module before they serve anything
    from ..models import Backend, Tunnel
    from .observe import RequestObserver, ResponseObserver, SkipRule
    from .records import RecordStore

RELAY_DETAIL = ("an inspected tunnel's route points at a recording HTTP/1.1 relay in the daemon, which forwards to the "
                "backend unchanged; tunnels that are not inspected do not pass through it")


@dataclass(frozen=True)
class InspectMode:
    """How an engine's inspected tunnels are recorded (`engines --json`): `native` or `relay`."""

    mode: str = "relay"
    detail: str = RELAY_DETAIL

    @property
    def native(self) -> bool:
        return self.mode == "native"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "detail": self.detail}


#: The default of every engine: the daemon's recording relay in front of the backends.
RELAY = InspectMode()


def health_skip_rule(tunnel: "Tunnel") -> "SkipRule | None":
    """Active health checks (GET of the tunnel's health path) are not recorded, in either mode."""
    health = tunnel.health
    return None if health is None else (lambda method, path: method == "GET" and path == health.path)


class InspectRecorder:
    """Opens the observers of one backend connection of an inspected tunnel (`EngineContext.recorder`)."""

    def __init__(self, store: "RecordStore") -> None:
        self.store = store

    def open(self, tunnel: "Tunnel", backend: "Backend") -> "tuple[RequestObserver, ResponseObserver]":
        """Observers for one new connection to `backend` of `tunnel`: feed them the bytes written
        to it and read from it, in order; call the response observer's `close` when it ends."""
        from .observe import RequestObserver, ResponseObserver

        requests = RequestObserver(self.store, tunnel.name, backend.url, health_skip_rule(tunnel))
        return requests, ResponseObserver(self.store, requests)
