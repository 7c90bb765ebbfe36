"""Engine-neutral HTML pages for answers the proxy gives itself (404, 502, 503).

Pure functions with every interpolated value HTML-escaped, so the builtin engine and any
config-generating engine (nginx, Caddy, Envoy) can serve the same pages.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

from .models import NAME_SUFFIXES, Backend, Listen, Tunnel

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}"
    "li{margin:.2rem 0}.muted{color:#777}"
)


def _page(title: str, body: str) -> str:
    """Wrap `body` (already escaped HTML) in a minimal standalone document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{escape(title)}</h1>\n{body}\n"
        "<p class=\"muted\">gotunnel</p>\n</body></html>\n"
    )


def tunnel_urls(tunnel: Tunnel, listen: Listen) -> list[str]:
    """Every URL a tunnel answers on (HTTPS first when enabled); wildcards shown with `*`."""
    urls: list[str] = []
    for suffix in NAME_SUFFIXES:
        host = f"{tunnel.name}.{suffix}"
        if tunnel.https:
            urls.append(f"https://{host}" + ("" if listen.https_port == 443 else f":{listen.https_port}"))
        urls.append(f"http://{host}" + ("" if listen.http_port == 80 else f":{listen.http_port}"))
    return urls


def not_found_page(host: str, tunnels: Sequence[Tunnel], listen: Listen, max_listed: int | None = None) -> str:
    """404: no tunnel answers for `host`; lists the active tunnels with their URLs (the first
    `max_listed` by name, then how many more, for an engine that serves a page from a bounded buffer)."""
    if tunnels:
        items = []
        ordered = sorted(tunnels, key=lambda t: t.name)
        listed = ordered if max_listed is None else ordered[:max(0, max_listed)]
        for tunnel in listed:
            links = " ".join(
                f"<a href=\"{escape(u)}\">{escape(u)}</a>" if "*" not in u else f"<code>{escape(u)}</code>"
                for u in tunnel_urls(tunnel, listen)
            )
            items.append(f"<li><code>{escape(tunnel.name)}</code>: {links}</li>")
        listing = "<p>Active tunnels:</p>\n<ul>\n" + "\n".join(items) + "\n</ul>"
        if len(listed) < len(ordered):
            listing += f"\n<p>... and {len(ordered) - len(listed)} more (<code>gotunnel list</code> shows them all).</p>"
    else:
        listing = "<p>No tunnels are active. Start one with <code>gotunnel start -d NAME -p PORT</code>.</p>"
    body = f"<p>No tunnel answers for <code>{escape(host or '(no Host header)')}</code>.</p>\n{listing}"
    return _page("404: no tunnel for this host", body)


def bad_gateway_page(tunnel_name: str, backend_url: str, reason: str) -> str:
    """502: the backend of tunnel `tunnel_name` could not be reached or answered badly."""
    body = (
        f"<p>Tunnel <code>{escape(tunnel_name)}</code> could not get an answer from its backend "
        f"<code>{escape(backend_url)}</code>: {escape(reason)}.</p>\n"
        "<p>Is your server running and listening on that address and port?</p>"
    )
    return _page("502: backend unreachable", body)


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
    return _page("503: no healthy backend", body)


def unreachable_page(tunnel_name: str, problem: str, fix: str) -> str:
    """502: a provided tunnel (a container) that no address reaches; says why and what to change."""
    body = (
        f"<p>Tunnel <code>{escape(tunnel_name)}</code> has no backend gotunnel can reach: {escape(problem)}.</p>\n"
        f"<p>To fix it: {escape(fix)}.</p>\n"
        "<p class=\"muted\">`gotunnel status` shows the same.</p>"
    )
    return _page("502: container unreachable", body)
