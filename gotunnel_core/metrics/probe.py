"""Backend health for engines that cannot report it (nginx-light): the daemon's own TCP probe.

At a scrape, every backend of every tunnel gets one TCP connect with a short deadline, all at
once; a backend that accepts counts as up. This is what the engine would find too: nginx marks a
backend down only after a failed connection to it.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from ..models import Tunnel
from .stats import BackendHealth

PROBE_TIMEOUT = 0.5


async def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def probe_backends(tunnels: Iterable[Tunnel], timeout: float = PROBE_TIMEOUT) -> list[BackendHealth]:
    """One TCP connect per distinct backend address; the verdict is shared by every tunnel using it."""
    pairs = [(t.name, b) for t in tunnels for b in t.backends]
    addresses = sorted({(b.host, b.port) for _, b in pairs})
    results = await asyncio.gather(*(_connects(h, p, timeout) for h, p in addresses))
    up = dict(zip(addresses, results))
    return [BackendHealth(name, b.url, up[(b.host, b.port)]) for name, b in pairs]
