"""Proxy loops: a tunnel whose backend is gotunnel's own listener.

Two defences, shared by every engine:

- `check_not_own_listener` refuses, before anything changes, a backend that is one of this
  gotunnel's listeners (a loopback or listen address at the HTTP or HTTPS port);
- at run time every engine sends `HOP_HEADER: <hop id>` upstream and answers 508 (`pages.loop_page`)
  to a request that arrives carrying its own hop id, so a loop through a name or address the
  first check cannot know (a hosts entry, another interface) ends after one round.

The hop id is random per state directory (`hop_id`), so a request passing through another
user's gotunnel, or a colleague's, is never mistaken for a loop.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Iterable

from .errors import UsageError
from .fsutil import atomic_write
from .models import Backend, Listen, Tunnel, parse_hop_id

HOP_HEADER = "Gotunnel-Hop"
HOP_FILE = "hop-id"


def hop_id(state_root: Path) -> str:
    """This state directory's loop marker, created on first use (16 random hex digits)."""
    path = state_root / HOP_FILE
    try:
        return parse_hop_id(path.read_text().strip())
    except (OSError, UsageError):
        value = secrets.token_hex(8)
        atomic_write(path, value + "\n", mode=0o600)
        return value


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a backend host stands for (`*.localhost` is loopback; other names resolved)."""
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable: not ours (the engine reports it)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    import psutil

    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.add(ipaddress.ip_address(addr.address.split("%", 1)[0]))
                except ValueError:
                    continue
    return found


def _listens_on(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, bind: str,
                local: set[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    """Whether a connection to `ip` reaches a listener bound to `bind` on this machine."""
    bound = ipaddress.ip_address(bind)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return True  # connecting to 0.0.0.0 / :: reaches this machine
    if bound.is_unspecified:
        # 0.0.0.0 takes every IPv4 address of this machine (all of 127/8); `::` takes both families.
        if bound.version == 4 and ip.version != 4:
            return False
        return ip.is_loopback or ip in local
    return ip == bound


def own_listener(backend: Backend, listen: Listen) -> str | None:
    """'HTTP' or 'HTTPS' when `backend` is one of gotunnel's own listeners, else None."""
    if backend.port not in (listen.http_port, listen.https_port):
        return None
    addresses = _addresses(backend.host)
    local = _local_addresses() if addresses else set()
    if any(_listens_on(ip, listen.bind, local) for ip in addresses):
        return "HTTP" if backend.port == listen.http_port else "HTTPS"
    return None


def check_not_own_listener(tunnels: Iterable[Tunnel], listen: Listen) -> None:
    """Refuse a tunnel whose backend is gotunnel's own listener (it would proxy to itself)."""
    for tunnel in tunnels:
        for backend in tunnel.backends:
            which = own_listener(backend, listen)
            if which is not None:
                raise UsageError(
                    f"invalid backend {backend.url!r} for tunnel {tunnel.name!r}: it is gotunnel's own {which} "
                    f"listener ({listen.bind} port {backend.port}), so the tunnel would proxy to itself in a loop",
                    hint="give the port your server listens on, or move gotunnel's with --http-port/--https-port",
                )
