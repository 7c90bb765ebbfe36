"""The daemon's inspector: the record store, and how inspected tunnels reach it (relays or the engine)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import RuntimeFailure
from ..models import Backend, Tunnel
from .native import InspectRecorder
from .records import Record, RecordStore
from .relay import RelaySet
from .replay import replay

class Inspector:
    """Records inspected tunnels' traffic and answers the dashboard's questions about it.

    By default (`native` False) each backend of an inspected tunnel gets a recording relay and the
    engine is routed through it (`relay`). When the engine records natively (`Engine.inspect_mode`),
    the daemon sets `native`: tunnels go to the engine unchanged and the engine feeds `recorder`.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.store = RecordStore(int(settings.get("inspect_max_requests", 500)),
                                 int(settings.get("inspect_body_limit", 1024 * 1024)))
        self.relays = RelaySet(self.store)
        self.recorder = InspectRecorder(self.store)
        self.native = False
        self._inspected: dict[str, Tunnel] = {}  # native mode: the inspected tunnels the engine serves

    async def engine_tunnels(self, tunnels: Iterable[Tunnel]) -> list[Tunnel]:
        """The tunnels as the engine must serve them: unchanged when it records natively, else with
        relays started for the inspected ones."""
        tunnels = list(tunnels)
        if self.native:
            self._inspected.update((t.name, t) for t in tunnels if t.inspect)
            return tunnels
        await self.relays.sync(tunnels)
        return [self.relays.engine_view(t) for t in tunnels]

    async def prune(self, tunnels: Iterable[Tunnel]) -> None:
        """After the engine applied `tunnels`: forget what nothing routes to any more (relays closed)."""
        tunnels = list(tunnels)
        if self.native:
            self._inspected = {t.name: t for t in tunnels if t.inspect}
            return
        await self.relays.prune(tunnels)

    def backend_of(self, tunnel: str, url: str) -> Backend | None:
        """The backend `url` of the inspected tunnel `tunnel`, while it is inspected."""
        if not self.native:
            return self.relays.backend_of(tunnel, url)
        served = self._inspected.get(tunnel)
        return next((b for b in served.backends if b.url == url), None) if served is not None else None

    async def replay(self, record: Record, edits: Mapping[str, Any] | None = None) -> Record:
        backend = self.backend_of(record.tunnel, record.backend)
        if backend is None:
            raise RuntimeFailure(f"cannot replay request {record.id}: tunnel {record.tunnel!r} no longer has "
                                 f"backend {record.backend} under inspection")
        return await replay(self.store, record, backend, edits)

    async def close(self) -> None:
        await self.relays.close()
