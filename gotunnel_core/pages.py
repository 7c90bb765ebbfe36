"""Engine-neutral HTML pages for answers the proxy gives itself (404, 502, 503, 504, 508).

Pure functions with every interpolated value HTML-escaped, so the builtin engine and any
config-generating engine (nginx, Caddy, Envoy) can serve the same pages.

The detailed pages (the 404 listing every tunnel, the 502 naming the backend and the error)
are for the developer on this machine: engines serve them to loopback peers only. A LAN peer
gets `plain_page(status)`, which names nothing (see `lan.py`).
"""

from __future__ import annotations

from html import escape
from typing import Sequence

from .models import Backend, Listen, RouteTable, Tunnel
from .urls import tunnel_urls

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}"
    "li{margin:.2rem 0}.muted{color:#777}"
)

#: Titles of the pages the proxy answers itself, by status (also the plain pages' whole text).
TITLES = {
    400: "400: bad request",
    404: "404: no tunnel for this host",
    405: "405: method not allowed",
    502: "502: backend unreachable",
    503: "503: no healthy backend",
    504: "504: backend did not answer in time",
    508: "508: proxy loop",
}


def _page(title: str, body: str) -> str:
    """Wrap `body` (already escaped HTML) in a minimal standalone document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{escape(title)}</h1>\n{body}\n"
        "<p class=\"muted\">gotunnel</p>\n</body></html>\n"
    )


def plain_page(status: int) -> str:
    """The page a LAN peer gets: the status and nothing about tunnels, backends or errors."""
    return _page(TITLES[status], "")


def not_found_page(host: str, tunnels: Sequence[Tunnel], listen: Listen, max_listed: int | None = None, *,
                   mdns: bool = True, hosts: bool = False) -> str:
    """404: no tunnel answers for `host`; lists the active tunnels with their URLs (the first
    `max_listed` by name, then how many more, for an engine that serves a page from a bounded
    buffer; `NAME.local` URLs only where such names resolve: `mdns`, `hosts`, see `urls.tunnel_urls`)."""
    if tunnels:
        items = []
        ordered = sorted(tunnels, key=lambda t: t.name)
        listed = ordered if max_listed is None else ordered[:max(0, max_listed)]
        for tunnel in listed:
            links = " ".join(
                f"<a href=\"{escape(u)}\">{escape(u)}</a>" if "*" not in u else f"<code>{escape(u)}</code>"
                for u in tunnel_urls(tunnel, listen, mdns=mdns, hosts=hosts)
            )
            items.append(f"<li><code>{escape(tunnel.name)}</code>: {links}</li>")
        listing = "<p>Active tunnels:</p>\n<ul>\n" + "\n".join(items) + "\n</ul>"
        if len(listed) < len(ordered):
            listing += f"\n<p>... and {len(ordered) - len(listed)} more (<code>gotunnel list</code> shows them all).</p>"
    else:
        listing = "<p>No tunnels are active. Start one with <code>gotunnel start -d NAME -p PORT</code>.</p>"
    body = f"<p>No tunnel answers for <code>{escape(host or '(no Host header)')}</code>.</p>\n{listing}"
    return _page(TITLES[404], body)


def table_not_found_page(host: str, table: RouteTable) -> str:
    """`not_found_page` for every tunnel of `table`, with its name settings."""
    return not_found_page(host, table.tunnels, table.listen, mdns=table.mdns, hosts=table.hosts)


def bad_gateway_page(tunnel_name: str, backend_url: str, reason: str) -> str:
    """502: the backend of tunnel `tunnel_name` could not be reached or answered badly."""
    body = (
        f"<p>Tunnel <code>{escape(tunnel_name)}</code> could not get an answer from its backend "
        f"<code>{escape(backend_url)}</code>: {escape(reason)}.</p>\n"
        "<p>Is your server running and listening on that address and port?</p>"
    )
    return _page(TITLES[502], body)


def unavailable_page(tunnel_name: str, backends: Sequence[Backend | str]) -> str:
    """503: every backend of tunnel `tunnel_name` is currently marked unhealthy."""
    items = "\n".join(
        f"<li><code>{escape(b.url if isinstance(b, Backend) else str(b))}</code></li>" for b in backends
    )
    body = (
        f"<p>All backends of tunnel <code>{escape(tunnel_name)}</code> are unhealthy; "
        "requests resume as soon as one passes its health check.</p>\n"
        f"<ul>\n{items}\n</ul>"
    )
    return _page(TITLES[503], body)


def gateway_timeout_page(tunnel_name: str, backend_url: str, seconds: float) -> str:
    """504: the backend accepted the request but sent no response within `upstream_timeout`."""
    body = (
        f"<p>Tunnel <code>{escape(tunnel_name)}</code>: the backend <code>{escape(backend_url)}</code> "
        f"sent no response within {seconds:g} s (<code>upstream_timeout</code>).</p>\n"
        "<p>Is your server stuck, or does this request need longer? Raise <code>upstream_timeout</code> "
        "for the tunnel in its config.</p>"
    )
    return _page(TITLES[504], body)


def loop_page(tunnel_name: str) -> str:
    """508: the request came back to gotunnel through the tunnel's own backend."""
    body = (
        f"<p>The backend of tunnel <code>{escape(tunnel_name)}</code> leads back to gotunnel itself, "
        "so this request went round in a loop; it was stopped here.</p>\n"
        "<p>Point the tunnel at your server's own port, not at gotunnel's.</p>"
    )
    return _page(TITLES[508], body)


def unreachable_page(tunnel_name: str, problem: str, fix: str) -> str:
    """502: a provided tunnel (a container) that no address reaches; says why and what to change."""
    body = (
        f"<p>Tunnel <code>{escape(tunnel_name)}</code> has no backend gotunnel can reach: {escape(problem)}.</p>\n"
        f"<p>To fix it: {escape(fix)}.</p>\n"
        "<p class=\"muted\">`gotunnel status` shows the same.</p>"
    )
    return _page("502: container unreachable", body)
