"""The providers a daemon follows (Docker), their tasks, and which ones `docker watch` turned on.

The tunnel manager decides what is served; this module only runs providers: it starts each one
(connect and publish at once, so a failure reaches the command that asked), keeps it following in a
task that reconnects on its own, remembers `gotunnel docker watch` across daemon restarts
(`providers.json` in the state directory), and runs the explainer that answers for tunnels whose
container nothing can reach.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

from ..errors import GotunnelError
from ..fsutil import atomic_write
from ..logs import get_logger
from ..paths import StateLayout
from ..providers import Provider, load_provider
from .explainer import Explainer, Lookup

log = get_logger("gotunnel.daemon")


class ProviderHost:
    """Starts, follows and stops the providers of one daemon."""

    def __init__(self, layout: StateLayout, settings: Mapping[str, Any], manager: Any, explain: Lookup) -> None:
        self.layout = layout
        self.settings = settings
        self.manager = manager
        self.providers: dict[str, Provider] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.explainer = Explainer(explain)

    def wanted(self) -> list[str]:
        """Providers to follow: the `providers` setting plus those `gotunnel docker watch` turned on."""
        return sorted(set(self.settings.get("providers") or []) | set(self._watched()))

    def _watched(self) -> list[str]:
        try:
            data = json.loads(self.layout.providers_file.read_text())
        except (OSError, ValueError):
            return []
        return [str(n) for n in data.get("watch", [])] if isinstance(data, dict) else []

    def _persist_watch(self, name: str, on: bool) -> None:
        watched = set(self._watched())
        watched = watched | {name} if on else watched - {name}
        atomic_write(self.layout.providers_file, json.dumps({"watch": sorted(watched)}) + "\n", mode=0o600)

    async def explainer_url(self) -> str:
        """The loopback URL of the 502 explainer (started on first use)."""
        await self.explainer.start()
        return self.explainer.url

    async def start_wanted(self) -> None:
        """At daemon start: follow every wanted provider; one that cannot connect retries in the background."""
        for name in self.wanted():
            try:
                await self.start(name, persist=False)
            except GotunnelError as exc:  # e.g. Docker is down
                log.warning("provider not connected; retrying in the background", provider=name, error=exc.message)
                self._run(name, self.providers[name])

    async def start(self, name: str, *, persist: bool = True) -> Provider:
        """Follow provider `name` (connect and publish now; raise with its reason when it cannot)."""
        if name not in self.providers:
            self.providers[name] = load_provider(name, self.manager)
        provider = self.providers[name]
        if name not in self._tasks:
            try:
                await provider.start()
            except BaseException:
                if persist:  # asked for by a command: report the failure, keep nothing half-started
                    self.providers.pop(name, None)
                raise
            self._run(name, provider)
        if persist:
            await asyncio.to_thread(self._persist_watch, name, True)
        return provider

    def _run(self, name: str, provider: Provider) -> None:
        self._tasks[name] = asyncio.create_task(provider.run(), name=f"provider-{name}")

    async def stop(self, name: str, *, persist: bool = True) -> None:
        """Stop following `name` (and forget `docker watch` for it, when `persist`)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        provider = self.providers.pop(name, None)
        if provider is not None:
            await provider.close()
        if persist:
            await asyncio.to_thread(self._persist_watch, name, False)

    async def close(self) -> None:
        """Daemon shutdown: stop every provider (they are followed again at the next start) and the explainer."""
        for name in list(self.providers):
            await self.stop(name, persist=False)
        await self.explainer.close()

    def status(self) -> dict[str, Any]:
        return {name: provider.status() for name, provider in sorted(self.providers.items())}
