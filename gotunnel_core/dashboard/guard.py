"""Who may talk to the dashboard: loopback peers of the daemon's own user, under our own names.

- The listener binds loopback addresses only, and every connection's peer is checked again.
- On Linux the peer socket's owner (from /proc/net/tcp*) must be the daemon's user (or root): the
  dashboard shows other people's Authorization headers otherwise.
- The Host header must name the dashboard (`gotunnel.localhost`, `localhost`, a loopback address,
  with our port): a DNS-rebinding page's requests carry the attacker's name and are refused.
- A request with an `Origin` must come from the dashboard itself (no cross-site POST or read).

Through the engine (`https://gotunnel.localhost:<https_port>/`, see `route`) the peer is the engine
and the names are the engine's: `gotunnel.localhost` bare or with the HTTP or HTTPS port. The
engine keeps LAN peers out (`.localhost` names and `lan = false` routes answer loopback only), and
any user of this machine can use that route (the dedicated port keeps the same-user check).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..models import Listen
from .route import engine_hosts, engine_origins

DASHBOARD_NAMES = ("gotunnel.localhost", "localhost", "127.0.0.1", "[::1]")


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset(f"{name}:{port}" for name in DASHBOARD_NAMES)


def host_allowed(host: str | None, port: int) -> bool:
    return host is not None and host.strip().lower().rstrip(".") in allowed_hosts(port) | (
        {"gotunnel.localhost", "localhost"} if port == 80 else set())


def origin_allowed(origin: str | None, port: int) -> bool:
    """No Origin (curl, the CLI, same-origin GET) or our own; `null` and other sites are refused."""
    if origin is None:
        return True
    return origin.lower() in {f"http://{host}" for host in allowed_hosts(port)}


def engine_host_allowed(host: str | None, listen: Listen) -> bool:
    """Host of a request the engine routed here: `gotunnel.localhost`, bare or with our HTTP/HTTPS port."""
    return host is not None and host.strip().lower().rstrip(".") in engine_hosts(listen)


def engine_origin_allowed(origin: str | None, listen: Listen) -> bool:
    """No Origin, or the dashboard's own page through the engine (https or http)."""
    return origin is None or origin.lower() in engine_origins(listen)


def forwarded_from_this_machine(forwarded_for: str | None) -> bool:
    """Through the engine, a second line behind its loopback-only routing: the client address the
    engine appended last to `X-Forwarded-For` must be loopback too (no header: nothing to check)."""
    if forwarded_for is None:
        return True
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    return is_loopback(last[1:-1] if last.startswith("[") and last.endswith("]") else last)


def _proc_hex(address: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    packed = ipaddress.ip_address(address.split("%", 1)[0]).packed
    words = "".join(f"{int.from_bytes(packed[i:i + 4], 'little'):08X}" for i in range(0, len(packed), 4))
    return f"{words}:{port:04X}"


def peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the client end of a loopback TCP connection (Linux), None if not found."""
    want_local, want_remote = _proc_hex(peer[0], peer[1]), _proc_hex(local[0], local[1])
    table = "tcp6" if ":" in peer[0] else "tcp"
    try:
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] == want_local and fields[2] == want_remote:
            return int(fields[7])
    return None


def same_user(peer: tuple[str, int], local: tuple[str, int]) -> bool:
    """True when the peer runs as our user or root; where /proc is missing (not Linux), True."""
    if not Path("/proc/net/tcp").exists():
        return True
    uid = peer_uid(peer, local)
    return uid is not None and uid in (os.getuid(), 0)
