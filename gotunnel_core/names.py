"""Names on the LAN for the daemon: mDNS advertisement of `NAME.local` and the optional hosts block."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Mapping

from .logs import get_logger
from .models import Listen, Tunnel
from .paths import StateLayout

log = get_logger("gotunnel.names")


def base_name(tunnel: Tunnel) -> str:
    """The name advertised for a tunnel: wildcards advertise their base (`*.app` -> `app`)."""
    return tunnel.name[2:] if tunnel.is_wildcard else tunnel.name


class NameService:
    """Publishes and withdraws tunnel names through mDNS and/or the hosts file, as configured."""

    def __init__(self, settings: Mapping[str, Any], layout: StateLayout) -> None:
        self.settings = settings
        self.layout = layout
        self.mdns: Any = None
        self.hosts: Any = None
        self.hosts_error: str | None = None

    async def start(self) -> None:
        if self.settings.get("hosts"):
            from .hosts import HostsFile, default_hosts_path

            path = self.settings.get("hosts_file") or default_hosts_path()
            self.hosts = HostsFile(Path(path))
        if self.settings.get("mdns"):
            from .mdns.advertiser import MdnsAdvertiser

            self.mdns = MdnsAdvertiser(interfaces=list(self.settings.get("mdns_interface") or []) or None)
            await self.mdns.start()

    async def publish(self, tunnels: list[Tunnel], listen: Listen) -> None:
        """Claim each tunnel's `NAME.local`; on a conflict, release what this call claimed and raise.

        A `lan = false` tunnel is never announced on the LAN; the hosts file (this machine) still
        gets its entry."""
        if self.mdns is not None:
            claimed: list[str] = []
            try:
                for tunnel in (t for t in tunnels if t.lan):
                    name = base_name(tunnel)
                    await self.mdns.publish(
                        name,
                        http_port=listen.http_port,
                        https_port=listen.https_port if tunnel.https else None,
                    )
                    claimed.append(name)
            except BaseException:
                for name in claimed:
                    await self.mdns.withdraw(name)
                raise
        if self.hosts is not None:
            await self._hosts_call("add", [f"{base_name(t)}.local" for t in tunnels])

    async def withdraw(self, tunnels: list[Tunnel]) -> None:
        if self.mdns is not None:
            for tunnel in (t for t in tunnels if t.lan):
                await self.mdns.withdraw(base_name(tunnel))
        if self.hosts is not None:
            await self._hosts_call("remove", [f"{base_name(t)}.local" for t in tunnels])

    async def close(self) -> None:
        """Goodbye packets for every advertised name; the hosts block keeps its entries until stop."""
        if self.mdns is not None:
            await self.mdns.close()

    def status(self) -> dict[str, Any]:
        return {
            "mdns": self.mdns.published() if self.mdns is not None else None,
            "hosts_file": str(self.hosts.path) if self.hosts is not None else None,
            "hosts_error": self.hosts_error,
        }

    async def _hosts_call(self, method: str, names: list[str]) -> None:
        """Hosts-file updates are best effort for the daemon: a permission problem is reported, not fatal."""
        from .errors import GotunnelError

        try:
            await asyncio.to_thread(getattr(self.hosts, method), names)
            self.hosts_error = None
        except GotunnelError as exc:
            self.hosts_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            log.warning("hosts file not updated", error=exc.message, hint=exc.hint)
