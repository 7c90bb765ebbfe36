"""Rendering a route table into HAProxy configuration files.

One generation directory holds everything HAProxy reads, and HAProxy runs with `-C <that
directory>`, so every path in the config is relative to it and the validator (`haproxy -c`) reads
exactly the files the reload will:

    haproxy.cfg          the configuration (Jinja2 template `haproxy.cfg.j2`, quoting in `quoting.py`)
    maps/http.map        host name -> backend, for the HTTP frontend (`redirect-307`/`-308` for --redirect-https)
    maps/https.map       host name -> backend, for the HTTPS frontend (only tunnels served over HTTPS)
    maps/*-lan.map       the same for LAN peers: no `.localhost` names, no `lan = false` tunnels,
                         and each tunnel's `lan:` twin backend (plain pages, gotunnel_core.lan)
    crt-list.txt         each HTTPS tunnel's certificate with its SNI names; the default one first
    certs/NAME.pem       links to the certificate and its key (`NAME.pem.key`, where HAProxy looks
                         for it): no copy of a key is ever written (`RenderedLink`)
    pages/404.html       the 404 listing as a log-format file (it names the requested host)
    pages/502-NAME.http  the tunnel's 502 page as a raw HTTP response (`errorfile`); 504 likewise
    pages/503-NAME.html  the tunnel's page when its health checks failed every backend
    pages/508-NAME.html  the tunnel's proxy-loop page (gotunnel_core.loops)
    pages/plain-N.*      what a LAN peer gets instead: the status and nothing else

Host routing is two map lookups (the exact name, then the name with its first label replaced by
`*` for wildcard tunnels), so 1,000 tunnels cost what one does. The pages come from
`gotunnel_core.pages`, already escaped, and live in files: no page text is ever inside the config.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gotunnel_core import dotsegments, pages
from gotunnel_core.engine import EngineValidationError, RenderedLink
from gotunnel_core.lan import LOOPBACK_CIDRS, is_localhost_host
from gotunnel_core.loops import HOP_HEADER
from gotunnel_core.models import CertFiles, RouteTable, Tunnel
from gotunnel_core.quoting import is_ip
from gotunnel_core.templating import render_template, template_environment

from .metrics import LOG_FORMAT
from .quoting import FILTERS, HAProxyQuoteError, hap_name, is_proxy_name, lf_literal

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAIN_TEMPLATE = "haproxy.cfg.j2"
CONFIG_FILE = "haproxy.cfg"
GENERATION_FILE = "generation.txt"
#: HAProxy weights go from 1 to 256; gotunnel's from 1 to 1000 (scaled down, ratios kept).
MAX_WEIGHT = 256
#: Seconds a backend that refused a connection sits out when its tunnel has no active check.
PASSIVE_EJECT = 10.0
#: `http-request return` serves a page from one buffer (tune.bufsize, 16 KiB by default, less what
#: HAProxy keeps for rewrites and headers): the 404 listing is cut to fit.
MAX_PAGE = 12 * 1024
#: The plain pages a LAN peer gets (and everyone, for 400 and 405): bodies for `http-request return`,
#: and complete responses for `errorfile` (HAProxy's own 502 and 504).
PLAIN_PAGES = (400, 404, 405, 503, 508)
PLAIN_ERRORFILES = (502, 504)
_REASONS = {502: "Bad Gateway", 504: "Gateway Timeout"}
#: The requested host in the 404 page: the frontend sets it, with anything but host-name
#: characters replaced, so the page needs no HTML escaping of it.
HOST_EXPR = "%[var(txn.gt_page_host)]"


@dataclass(frozen=True)
class RenderOptions:
    """Knobs of the rendered config that do not come from the route table."""

    control_socket: str = "run/ctl.sock"
    threads: int | None = None
    maxconn: int | None = None
    http2: bool = True
    template_dir: str | None = None
    #: port -> inherited listening socket (`bind fd@N`): the daemon's given sockets, or None to bind.
    listen_fds: Mapping[int, int] | None = None
    #: the daemon's access-log datagram socket (metrics; the option `metrics`), or None: no log
    metrics_socket: str | None = None


def render_files(table: RouteTable, options: RenderOptions) -> dict[str, str]:
    """Every file of one generation but `generation.txt` (see `generation_file`)."""
    views = [tunnel_view(t, table.certs.get(t.name), table.timeout_of(t)) for t in table.tunnels]
    listen = table.listen
    fds = options.listen_fds or {}
    default_cert = table.default_cert or next((v["cert"] for v in views if v["cert"] is not None), None)
    context = {
        "options": options,
        "log_format": LOG_FORMAT,
        "listen": {
            "http": _address(listen.bind, listen.http_port),
            "https": _address(listen.bind, listen.https_port),
            "bind_options": _bind_options(listen.bind),
            "https_suffix": "" if listen.https_port == 443 else f":{listen.https_port}",
            "http_fd": fds.get(listen.http_port),
            "https_fd": fds.get(listen.https_port),
        },
        "tls": default_cert is not None,
        "wildcards": any(t.is_wildcard for t in table.tunnels),
        "tunnels": views,
        "generation_file": GENERATION_FILE,
        "loopback_cidrs": LOOPBACK_CIDRS,
        "dot_segment_regex": dotsegments.PATH_REGEX.removeprefix("(?i)"),
        "hop_header": HOP_HEADER,
        "hop_id": table.hop_id,
    }
    env = template_environment(TEMPLATES, options.template_dir, FILTERS)
    files: dict[str, str] = {
        CONFIG_FILE: render_template(env, MAIN_TEMPLATE, context, engine="haproxy", quote_errors=(HAProxyQuoteError,)),
        "maps/http.map": _map(views, https=False),
        "maps/https.map": _map(views, https=True),
        "maps/http-lan.map": _map(views, https=False, lan=True),
        "maps/https-lan.map": _map(views, https=True, lan=True),
        "crt-list.txt": _crt_list(views, default_cert),
        "pages/404.html": not_found_page(table),
    }
    if default_cert is not None:
        files.update(_cert_links("default", default_cert))
    for tunnel, view in zip(table.tunnels, views):
        if view["cert"] is not None:
            files.update(_cert_links(view["stem"], view["cert"]))
        backends = ", ".join(b.url for b in tunnel.backends)
        files[view["page_502"]] = _http_response(502, pages.bad_gateway_page(
            tunnel.name, backends, "the connection failed or was reset"))
        files[view["page_504"]] = _http_response(504, pages.gateway_timeout_page(
            tunnel.name, backends, table.timeout_of(tunnel)))
        files[view["page_508"]] = pages.loop_page(tunnel.name)
        if view["health"] is not None:
            files[view["page_503"]] = pages.unavailable_page(tunnel.name, tunnel.backends)
    for status in PLAIN_PAGES:
        files[f"pages/plain-{status}.html"] = pages.plain_page(status)
    for status in PLAIN_ERRORFILES:
        files[f"pages/plain-{status}.http"] = _http_response(status, pages.plain_page(status))
    return files


def generation_file(generation: int) -> dict[str, str]:
    """What the control socket answers: which configuration generation serves."""
    return {GENERATION_FILE: f"{int(generation)}\n"}


def render_options(settings: Mapping[str, Any], options: Mapping[str, Any], control_socket: str,
                   listen_fds: Mapping[int, int] | None = None, metrics_socket: str | None = None) -> RenderOptions:
    """Render options from the core settings, the engine's (validated) options, the inherited
    sockets and the metrics socket."""
    return RenderOptions(
        listen_fds=listen_fds,
        metrics_socket=metrics_socket,
        control_socket=control_socket,
        threads=options["threads"],
        maxconn=options["maxconn"],
        http2=bool(settings.get("http2", True)),
        template_dir=settings.get("template_dir"),
    )


# ----- one tunnel ------------------------------------------------------------------------------------

def _stem(tunnel: Tunnel) -> str:
    # Tunnel names are RFC 1123 labels (and a leading `*.`): `_` cannot occur otherwise.
    return tunnel.name.replace("*", "_")


def _weights(weights: list[int]) -> list[int]:
    """gotunnel weights (1-1000) as HAProxy weights (1-256), scaled only when one is above 256."""
    top = max(weights)
    if top <= MAX_WEIGHT:
        return weights
    return [max(1, round(w * MAX_WEIGHT / top)) for w in weights]


def tunnel_view(tunnel: Tunnel, cert: CertFiles | None, upstream_timeout: float = 60.0) -> dict[str, Any]:
    """What the template needs about one tunnel (values still raw; the template quotes them);
    `upstream_timeout` is the table's answer for it (`RouteTable.timeout_of`)."""
    prefixes = {b.path for b in tunnel.backends}
    if len(prefixes) > 1:
        raise EngineValidationError(
            f"haproxy: the backends of tunnel {tunnel.name!r} must share one path prefix "
            f"(got {', '.join(b.url for b in tunnel.backends)})")
    if tunnel.https and cert is None:
        raise EngineValidationError(f"haproxy: no certificate for tunnel {tunnel.name!r}")
    stem = _stem(tunnel)
    prefix = tunnel.backends[0].path
    health = tunnel.health
    req, resp = tunnel.headers.request, tunnel.headers.response
    addresses = [b.address for b in tunnel.backends]
    # `host_header = backend` with several backends: HAProxy picks the server after every
    # `http-request` rule ran, so only `http-send-name-header Host` can send the chosen one's
    # address, which then must be its server name (HAProxy refuses `[` in names, and repeats).
    named = (tunnel.host_header == "backend" and len(addresses) > 1 and len(set(addresses)) == len(addresses)
             and all(is_proxy_name(a) for a in addresses))
    servers = [
        {
            "name": b.address if named else f"s{i}",
            "address": b.address,
            "weight": weight,
            "tls": b.scheme == "https",
            "sni": b.host if b.scheme == "https" and not is_ip(b.host) else None,
            "h2": b.scheme == "h2c",
        }
        for i, (b, weight) in enumerate(zip(tunnel.backends, _weights([b.weight for b in tunnel.backends])))
    ]
    return {
        "name": tunnel.name,
        "stem": stem,
        "backend": "tunnel:" + stem,
        "hostnames": list(tunnel.hostnames),
        # What LAN peers may ask for: no `.localhost` names, nothing of a `lan = false` tunnel.
        "lan_hostnames": [h for h in tunnel.hostnames if not is_localhost_host(h)] if tunnel.lan else [],
        "https": tunnel.https,
        "redirect_https": tunnel.redirect_https,
        "redirect_code": tunnel.redirect_code,
        "upstream_timeout": upstream_timeout,
        "cert": cert if tunnel.https else None,
        "prefix": prefix,
        "servers": servers,
        # A refused connection is retried once, on another backend when there is one.
        "retries": 1,
        # Without active checks, several backends get the builtin engine's passive ejection: a
        # refused connection marks a backend down (`observe layer4`) until a TCP check, every
        # PASSIVE_EJECT seconds, reaches it again.
        "passive": PASSIVE_EJECT if health is None and len(tunnel.backends) > 1 else None,
        "health": None if health is None else {
            "uri": prefix + health.path,
            "host": tunnel.backends[0].address,
            "interval": health.interval,
            "timeout": health.timeout,
            "rise": health.healthy_threshold,
            "fall": health.unhealthy_threshold,
        },
        # The Host the backends see: the client's (untouched), the server's name, or one fixed value.
        "host": None if tunnel.host_header == "preserve" or named else tunnel.upstream_host("", tunnel.backends[0]),
        "host_by_server": named,
        "request_remove": list(req.remove),
        "request_add": list(req.add),
        "response_remove": list(resp.remove),
        "response_add": list(resp.add),
        "page_502": f"pages/502-{stem}.http",
        "page_503": f"pages/503-{stem}.html",
        "page_504": f"pages/504-{stem}.http",
        "page_508": f"pages/508-{stem}.html",
    }


# ----- files beside the config --------------------------------------------------------------------------

def _address(bind: str, port: int) -> str:
    return f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"


def _bind_options(bind: str) -> str:
    # `::` serves IPv4 too (as the daemon's own listeners do); another IPv6 address only itself.
    if ":" not in bind:
        return ""
    return " v4v6" if ipaddress.ip_address(bind) == ipaddress.IPv6Address("::") else " v6only"


def _map(views: list[dict[str, Any]], https: bool, lan: bool = False) -> str:
    """`host backend` lines (HAProxy's map format; keys are checked host names); `lan`: the map
    for LAN peers, with their names and each tunnel's `lan:` twin backend."""
    lines = []
    for view in views:
        if https and not view["https"]:
            continue
        if not https and view["redirect_https"]:
            target = f"redirect-{view['redirect_code']}"
        else:
            target = ("lan:" if lan else "") + view["backend"]
        lines += [f"{hap_name(host)} {target}" for host in (view["lan_hostnames"] if lan else view["hostnames"])]
    return "".join(line + "\n" for line in lines)


def _cert_links(stem: str, cert: CertFiles) -> dict[str, str]:
    """The certificate and, where HAProxy looks for it, its key: links, never copies."""
    try:
        return {f"certs/{stem}.pem": RenderedLink(cert.cert), f"certs/{stem}.pem.key": RenderedLink(cert.key)}
    except ValueError as exc:
        raise EngineValidationError(f"haproxy: {exc}") from None


def _crt_list(views: list[dict[str, Any]], default_cert: CertFiles | None) -> str:
    """The default certificate first (served for a name no tunnel has), then each HTTPS tunnel's
    certificate for exactly its names (HAProxy's wildcard filters match one label, like the cert)."""
    lines = ["certs/default.pem"] if default_cert is not None else []
    for view in views:
        if view["cert"] is not None:
            lines.append(f"certs/{view['stem']}.pem " + " ".join(hap_name(h) for h in view["hostnames"]))
    return "".join(line + "\n" for line in lines)


def _http_response(status: int, html: str) -> str:
    """A complete HTTP/1.1 response for `errorfile` (HAProxy sends it as is, status included)."""
    body = html.encode()
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n\r\n{html}")


#: Stands for the requested host in the 404 page until it becomes `HOST_EXPR`.
_HOST_MARK = "gotunnel-requested-host-5d1e0b"


def not_found_page(table: RouteTable) -> str:
    """The 404 page as a log-format file: `%` doubled everywhere but in the one expression that
    names the requested host; the listing is cut (by name) to what one HAProxy buffer holds."""
    def page(listed: int | None = None) -> str:
        return pages.not_found_page(_HOST_MARK, table.tunnels, table.listen, max_listed=listed,
                                    mdns=table.mdns, hosts=table.hosts)

    text = page()
    if len(text.encode()) > MAX_PAGE:
        fits, too_many = 0, len(table.tunnels)  # a page grows with what it lists: bisect the count
        while too_many - fits > 1:
            middle = (fits + too_many) // 2
            if len(page(middle).encode()) <= MAX_PAGE:
                fits = middle
            else:
                too_many = middle
        text = page(fits)
    assert text.count(_HOST_MARK) == 1
    return lf_literal(text).replace(_HOST_MARK, HOST_EXPR)


__all__ = ["CONFIG_FILE", "GENERATION_FILE", "PLAIN_ERRORFILES", "PLAIN_PAGES", "RenderOptions", "generation_file", "not_found_page",
           "render_files", "render_options", "tunnel_view"]
