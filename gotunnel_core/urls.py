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


def _host(url: str) -> str:
    """`https://myapp.local:8443/` -> `myapp.local`."""
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    return authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority


def pick_url(urls: list[str], *, lan: bool, plain: bool, name: str) -> str:
    """One of a tunnel's `urls`: https (or http with `plain`) on `.localhost` (or `.local` with `lan`)."""
    from .errors import RuntimeFailure

    scheme = "http" if plain else "https"
    suffix = ".local" if lan else ".localhost"
    for url in urls:
        if url.startswith(scheme + "://") and _host(url).endswith(suffix):
            return url
    if lan and not any(_host(url).endswith(".local") for url in urls):
        raise RuntimeFailure(f"tunnel {name!r} has no .local URL: mDNS is off",
                             hint="restart the daemon with mDNS on: gotunnel stop --all, then gotunnel --mdns start ...")
    raise RuntimeFailure(f"tunnel {name!r} serves no {scheme}:// URL", hint="it was started with --no-https: use --http")
