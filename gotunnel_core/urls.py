"""The URLs a tunnel answers on, as printed by `start`, returned by `list --json` and linked by the 404 page."""

from __future__ import annotations

from .models import Listen, Tunnel


def _url(scheme: str, host: str, port: int) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def local_name_resolves(tunnel: Tunnel, *, mdns: bool, hosts: bool) -> bool:
    """Whether `NAME.local` reaches `tunnel`: written into the hosts file (this machine), or
    announced by mDNS (a `lan = false` tunnel is never announced)."""
    return hosts or (mdns and tunnel.lan)


def tunnel_urls(tunnel: Tunnel, listen: Listen, *, mdns: bool, hosts: bool = False) -> list[str]:
    """`http://NAME.localhost:PORT`, `https://...` (when HTTPS is on), and the `.local` ones when
    such names resolve (`local_name_resolves`). Wildcards show as `*.NAME`."""
    local = local_name_resolves(tunnel, mdns=mdns, hosts=hosts)
    hosts_ = [f"{tunnel.name}.localhost"] + ([f"{tunnel.name}.local"] if local else [])
    urls: list[str] = []
    for host in hosts_:
        urls.append(_url("http", host, listen.http_port))
        if tunnel.https:
            urls.append(_url("https", host, listen.https_port))
    return urls
