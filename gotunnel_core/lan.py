"""Who may see what: loopback peers (this machine) versus LAN peers (phones, colleagues).

The proxy listens on every interface so phones reach `NAME.local`, which makes the LAN a
security boundary. Every engine applies the same rules, written here once:

- the detailed pages (404 listing the tunnels, 502 naming the backend and its error) go to
  loopback peers only; a LAN peer gets `pages.plain_page`;
- `NAME.localhost` is answered to loopback peers only (no LAN client legitimately sends it,
  and it must not reach a dev server that trusts "localhost");
- a tunnel with `lan = false` answers loopback peers only.

The peer is the connection's own address, never a forwarded header. Engines match it with
`LOOPBACK_CIDRS` (nginx `geo`, Caddy `remote_ip`, Envoy internal addresses) and the Host with
`LOCALHOST_HOST_REGEX`.
"""

from __future__ import annotations

import ipaddress

#: Peers that are this machine: IPv4 and IPv6 loopback, and IPv4 loopback mapped into IPv6
#: (a dual-stack listener sees an IPv4 peer as `::ffff:127.0.0.1`).
LOOPBACK_CIDRS: tuple[str, ...] = ("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104")
#: A Host header naming something under `.localhost` (with an optional trailing dot and port),
#: for RE2 and PCRE alike.
LOCALHOST_HOST_REGEX = r"(?i)^(?:[^:\[\]]*\.)?localhost\.?(?::[0-9]*)?$"

_NETS = tuple(ipaddress.ip_network(c) for c in LOOPBACK_CIDRS)


def is_loopback_peer(address: str) -> bool:
    """Whether a connection from `address` comes from this machine's loopback."""
    if address.startswith("127.") or address == "::1":
        return True  # the common case, without parsing
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in _NETS if net.version == ip.version)


def is_localhost_host(host: str) -> bool:
    """Whether a Host header value names `localhost` or a name under it (port and trailing dot allowed)."""
    host = host.lower()
    if host.startswith("["):
        return False
    name, sep, port = host.rpartition(":")
    if sep and (port.isdigit() or port == ""):
        host = name
    host = host.rstrip(".") if host.endswith(".") else host
    return host == "localhost" or host.endswith(".localhost")
