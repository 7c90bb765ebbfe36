"""The daemon's inspector: the record store and the relays of the inspected tunnels, as one object."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import RuntimeFailure
from ..models import Tunnel
from .records import Record, RecordStore
from .relay import RelaySet
from .replay import replay

#: How inspection works, per engine (`engines --json`): the same relay on every engine.
INSPECT_MODE = {
    "mode": "relay",
    "detail": "an inspected tunnel's route points at a recording HTTP/1.1 relay in the daemon, which forwards to the "
              "backend unchanged; tunnels that are not inspected do not pass through it",
}


class Inspector:
    """Records inspected tunnels' traffic (see `relay`) and answers the dashboard's questions about it."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.store = RecordStore(int(settings.get("inspect_max_requests", 500)),
                                 int(settings.get("inspect_body_limit", 1024 * 1024)))
        self.relays = RelaySet(self.store)

    async def engine_tunnels(self, tunnels: Iterable[Tunnel]) -> list[Tunnel]:
        """The tunnels as the engine must serve them, with relays started for the inspected ones."""
        tunnels = list(tunnels)
        await self.relays.sync(tunnels)
        return [self.relays.engine_view(t) for t in tunnels]

    async def prune(self, tunnels: Iterable[Tunnel]) -> None:
        """After the engine applied `tunnels`: close relays nothing routes to any more."""
        await self.relays.prune(tunnels)

    async def replay(self, record: Record, edits: Mapping[str, Any] | None = None) -> Record:
        backend = self.relays.backend_of(record.tunnel, record.backend)
        if backend is None:
            raise RuntimeFailure(f"cannot replay request {record.id}: tunnel {record.tunnel!r} no longer has "
                                 f"backend {record.backend} under inspection")
        return await replay(self.store, record, backend, edits)

    async def close(self) -> None:
        await self.relays.close()
