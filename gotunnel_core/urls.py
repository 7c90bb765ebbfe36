"""The URLs a tunnel answers on, as printed by `start` and returned by `list --json`."""

from __future__ import annotations

from .models import Listen, Tunnel


def _url(scheme: str, host: str, port: int) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def tunnel_urls(tunnel: Tunnel, listen: Listen, *, mdns: bool) -> list[str]:
    """`http://NAME.localhost:PORT`, `https://...` (when HTTPS is on), and the `.local` ones with mDNS."""
    hosts = [f"{tunnel.name}.localhost"] + ([f"{tunnel.name}.local"] if mdns else [])
    urls: list[str] = []
    for host in hosts:
        urls.append(_url("http", host, listen.http_port))
        if tunnel.https:
            urls.append(_url("https", host, listen.https_port))
    return urls
