"""Announce tunnel names as NAME.local (A/AAAA + DNS-SD) on the LAN, per interface.

Runs inside the daemon's event loop (asyncio or uvloop). One `InterfaceResponder` per
selected interface; a background task polls the interface table and re-announces when
addresses or interfaces change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from .interfaces import SelectedInterface, Snapshot, select_interfaces, take_snapshot
from .naming import NameConflict, candidates, mdns_base_name
from .probe import probe_names
from .responder import InterfaceResponder, Publication

log = logging.getLogger(__name__)


class MdnsAdvertiser:
    """Publishes tunnel names over mDNS on the chosen interfaces.

    `interfaces`: user override (names or addresses); None picks the LAN interfaces.
    `snapshot_fn` exists for tests; `poll_interval` is how often interfaces are re-read.
    """

    def __init__(
        self,
        interfaces: Sequence[str] | None = None,
        *,
        poll_interval: float = 1.0,
        snapshot_fn: Callable[[], Snapshot] = take_snapshot,
    ) -> None:
        self._override = list(interfaces) if interfaces else None
        self._poll_interval = poll_interval
        self._snapshot_fn = snapshot_fn
        self._pubs: dict[str, Publication] = {}
        self._responders: dict[str, InterfaceResponder] = {}
        self._lock = asyncio.Lock()
        self._watch_task: asyncio.Task | None = None
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open a responder on each chosen interface and start watching for changes.

        Raises gotunnel_core.errors.UsageError when the override names an interface that does not exist.
        """
        if self._started:
            return
        snapshot = await asyncio.to_thread(self._snapshot_fn)
        selected = select_interfaces(snapshot, self._override)  # validates the override
        async with self._lock:
            await self._reconcile(selected)
        self._started = True
        self._watch_task = asyncio.create_task(self._watch(), name="gotunnel-mdns-watch")

    async def close(self) -> None:
        """Send goodbyes for every name on every interface and close all sockets."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            try:
                await self._watch_task
            except asyncio.CancelledError:
                pass
            self._watch_task = None
        async with self._lock:
            responders, self._responders = self._responders, {}
            await asyncio.gather(*(r.close(goodbye=True) for r in responders.values()))
            self._pubs.clear()
        self._started = False

    # --- names -------------------------------------------------------------------------

    async def publish(self, name: str, *, http_port: int, https_port: int | None, path: str = "/") -> None:
        """Announce `name`.local with its services; raise NameConflict if it is taken.

        The name is probed on every active interface first (~0.75 s). Republishing a
        name we already announce updates ports/path without probing. With no active
        interface yet, the name is recorded and announced (unprobed) once one appears.
        """
        self._require_started()
        base = mdns_base_name(name)
        pub = Publication(base, http_port, https_port, path or "/")
        async with self._lock:
            if base not in self._pubs:
                await self._probe_or_raise(base)
            self._pubs[base] = pub
            await asyncio.gather(*(r.sync(self._pubs) for r in self._responders.values()))

    async def withdraw(self, name: str) -> None:
        """Stop announcing `name` and send goodbyes (TTL 0) for its records."""
        self._require_started()
        base = mdns_base_name(name)
        async with self._lock:
            if self._pubs.pop(base, None) is None:
                return
            await asyncio.gather(*(r.sync(self._pubs) for r in self._responders.values()))

    def published(self) -> dict[str, dict]:
        """What is announced: {base: {host, http_port, https_port, path, interfaces}}."""
        per_iface = {n: list(r.iface.addresses) for n, r in self._responders.items()}
        return {
            base: {
                "host": f"{base}.local",
                "http_port": pub.http_port,
                "https_port": pub.https_port,
                "path": pub.path,
                "interfaces": dict(per_iface),
            }
            for base, pub in self._pubs.items()
        }

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("MdnsAdvertiser.start() must be awaited first")

    async def _probe_or_raise(self, base: str) -> None:
        responders = [(r.zc, r.iface.addresses) for r in self._responders.values()]
        if not responders:
            return
        snapshot = await asyncio.to_thread(self._snapshot_fn)
        own = frozenset(a for info in snapshot.values() for a in info.addresses)
        own |= {a for r in self._responders.values() for a in r.iface.addresses}
        taken = await probe_names(responders, [base], own_addresses=own)
        if base not in taken:
            return
        options = candidates(base)
        busy = await probe_names(responders, options, own_addresses=own)
        suggestion = next((c for c in options if c not in busy), None)
        raise NameConflict(base, suggestion, taken[base])

    # --- interfaces --------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                snapshot = await asyncio.to_thread(self._snapshot_fn)
                selected = select_interfaces(snapshot, self._override, missing_ok=True)
                async with self._lock:
                    await self._reconcile(selected)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep watching; one bad poll must not stop mDNS
                log.warning("mDNS interface update failed", exc_info=True)

    async def _reconcile(self, selected: list[SelectedInterface]) -> None:
        """Bring the per-interface responders in line with `selected` (lock held)."""
        wanted = {i.name: i for i in selected if i.addresses}
        for name in [n for n in self._responders if n not in wanted]:
            log.info("mDNS: interface %s gone, sending goodbyes", name)
            await self._responders.pop(name).close(goodbye=True)
        for name, iface in wanted.items():
            current = self._responders.get(name)
            if current is not None and current.iface == iface:
                continue
            if current is not None and current.bind_key == InterfaceResponder.bind_key_of(iface):
                log.info("mDNS: addresses of %s now %s, re-announcing", name, ", ".join(iface.addresses))
                await current.change_addresses(iface, self._pubs)
                continue
            # New interface, or the address our sockets are bound to went away: open a
            # fresh responder, announce there, then retire the old one without goodbyes
            # for the records the new one keeps announcing.
            try:
                responder = InterfaceResponder(iface)
                await responder.start()
                await responder.sync(self._pubs)
            except Exception:  # noqa: BLE001 - e.g. the address vanished again meanwhile
                log.warning("mDNS: cannot announce on %s", name, exc_info=True)
                continue
            self._responders[name] = responder
            if current is not None:
                removed = set(current.iface.addresses) - set(iface.addresses)
                await current.close(goodbye=False)
                responder.send_address_goodbyes(removed, self._pubs)
