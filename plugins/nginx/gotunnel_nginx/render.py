"""Rendering a route table into nginx configuration files with Jinja2.

Templates are found as `gotunnel_core.templating` sets up: the user's `template_dir` first, then
the templates packaged with this distribution, also reachable as `default:NAME` so an override
can `{% extends "default:nginx.conf.j2" %}`. Every value from the route table goes through an
explicit nginx quoting filter (see `quoting.py`).

The HTML pages (404 listing, per-tunnel 502) come from `gotunnel_core.pages`, already escaped,
and are written to files that nginx serves with `error_page` + `internal` locations, so no page
text ever lands inside the nginx config.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gotunnel_core import dotsegments, pages
from gotunnel_core.lan import LOCALHOST_HOST_REGEX, LOOPBACK_CIDRS
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.existing import ExistingTable
from gotunnel_core.models import CertFiles, RouteTable, Tunnel
from gotunnel_core.quoting import is_ip
from gotunnel_core.templating import render_template, template_environment

from .metrics import LOG_FORMAT
from .quoting import EXISTING_FILTERS, FILTERS, NginxQuoteError, ngx_str, ngx_str_existing

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAIN_TEMPLATE = "nginx.conf.j2"
#: Where the pages live, relative to the work directory (nginx -p): always the live generation.
PAGES_DIR = "current/pages"


@dataclass(frozen=True)
class RenderOptions:
    """Knobs of the rendered config that do not come from the route table."""

    workers: int = 1
    worker_connections: int = 4096
    keepalive: int = 256
    log_level: str = "warn"
    user: tuple[str, str] | None = None  # (user, group) when the daemon runs as root
    http2: bool = True  # offer h2 by ALPN on the HTTPS listener (the `http2` setting)
    template_dir: str | None = None
    metrics_socket: str | None = None  # the daemon's access-log datagram socket (metrics), if any


def make_environment(template_dir: str | None, existing: bool = False) -> Any:
    """The Jinja2 environment: the user's `template_dir`, then the packaged templates (also as
    `default:`); `existing`: with the filters of configs for an nginx gotunnel does not run."""
    return template_environment(TEMPLATES, template_dir, EXISTING_FILTERS if existing else FILTERS)


def _listen(bind: str, port: int) -> str:
    return f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"


def _page_name(tunnel: Tunnel, status: int = 502) -> str:
    # Tunnel names are RFC 1123 labels (and a leading `*.`): `_` cannot occur otherwise.
    return f"{status}-" + tunnel.name.replace("*", "_") + ".html"


#: Pages a LAN peer gets instead of the detailed ones (gotunnel_core.lan): `pages/plain-N.html`.
PLAIN_PAGES = (400, 404, 502, 504, 508)


def _server_names(tunnel: Tunnel) -> list[str]:
    return list(tunnel.hostnames)


@dataclass(frozen=True)
class Naming:
    """Names the config defines: gotunnel's own engine (`gt_`) or an existing nginx (`gotunnel_`)."""

    var_prefix: str = "gt_"
    quote: Any = ngx_str

    def upstream(self, index: int, tunnel: Tunnel) -> str:
        if self.var_prefix == "gt_":
            return f"gt_{index}"
        return self.var_prefix + tunnel.name.replace("*", "_").replace(".", "_")  # `_` is in no tunnel name


ENGINE_NAMING = Naming()
EXISTING_NAMING = Naming("gotunnel_", ngx_str_existing)


def tunnel_view(index: int, tunnel: Tunnel, cert: CertFiles | None, upstream_timeout: float = 60.0,
                naming: Naming = ENGINE_NAMING, server_names: tuple[str, ...] | None = None,
                https: bool | None = None) -> dict[str, Any]:
    """What the template needs about one tunnel (all values still raw; the template quotes).
    `server_names` and `https` override the tunnel's own (`.localhost`/`.local`, its `https`)."""
    https = tunnel.https if https is None else https
    schemes = {b.scheme for b in tunnel.backends}
    prefixes = {b.path for b in tunnel.backends}
    if len(schemes) > 1 or len(prefixes) > 1:
        raise EngineValidationError(
            f"nginx: the backends of tunnel {tunnel.name!r} must share one scheme and path prefix "
            f"(got {', '.join(b.url for b in tunnel.backends)})")
    if https and cert is None:
        raise EngineValidationError(f"nginx: no certificate for tunnel {tunnel.name!r}")
    health = tunnel.health
    # Passive health: after `unhealthy_threshold` failures a backend rests for interval x healthy_threshold.
    max_fails = health.unhealthy_threshold if health else 1
    fail_timeout = max(1, math.ceil(health.interval * health.healthy_threshold)) if health else 10
    req, resp = tunnel.headers.request, tunnel.headers.response
    request_add = list(req.add)
    added = {name.lower() for name, _ in request_add}
    request_remove = [name for name in req.remove if name.lower() not in added]
    first = tunnel.backends[0]
    return {
        # Host sent upstream: the client's, or one fixed value (`backend`: nginx picks the server
        # inside the upstream block, so every backend gets the first one's host:port).
        "host": f"${naming.var_prefix}host" if tunnel.host_header == "preserve"
        else naming.quote(tunnel.upstream_host("", first)),
        "name": tunnel.name,
        "upstream": naming.upstream(index, tunnel),
        "scheme": first.scheme,
        # gRPC requests to an https backend go through the grpc module (HTTP/2, ALPN h2).
        "grpc_branch": first.scheme == "https",
        "prefix": first.path,
        "tls_name": None if is_ip(first.host) else first.host,
        "server_names": list(server_names) if server_names is not None else _server_names(tunnel),
        "https": https,
        "redirect_https": tunnel.redirect_https,
        "redirect_code": tunnel.redirect_code,
        "lan": tunnel.lan,
        "read_timeout_ms": max(1, round(upstream_timeout * 1000)),
        "cert": cert,
        "backends": [{"address": b.address, "weight": b.weight} for b in tunnel.backends],
        "max_fails": max_fails,
        "fail_timeout": fail_timeout,
        "request_add": request_add,
        "request_remove": request_remove,
        "request_overridden": added | {name.lower() for name in req.remove},
        "response_hide": sorted({name for name in resp.remove} | {name for name, _ in resp.add}, key=str.lower),
        "response_add": list(resp.add),
        "page_502": _page_name(tunnel),
        "page_504": _page_name(tunnel, 504),
        "page_508": _page_name(tunnel, 508),
    }


def render_files(table: RouteTable, options: RenderOptions) -> dict[str, str]:
    """nginx.conf, generation.conf and the HTML pages for `table`."""
    env = make_environment(options.template_dir)
    listen = table.listen
    context = {
        "mode": "engine",
        "var_prefix": "gt_",
        "needs_dollar": True,
        "workers": options.workers,
        "worker_connections": options.worker_connections,
        "keepalive": options.keepalive,
        "log_level": options.log_level if options.log_level in ("debug", "info", "notice", "warn", "error") else "warn",
        "metrics_socket": options.metrics_socket,
        "metrics_format": LOG_FORMAT,
        "user": None if options.user is None else {"name": options.user[0], "group": options.user[1]},
        "http2": options.http2,
        "listen": {
            "http": _listen(listen.bind, listen.http_port),
            "https": _listen(listen.bind, listen.https_port),
            "https_suffix": "" if listen.https_port == 443 else f":{listen.https_port}",
        },
        "default_cert": table.default_cert,
        "pages_dir": PAGES_DIR,
        "plain_pages": PLAIN_PAGES,
        "loopback_cidrs": LOOPBACK_CIDRS,
        "localhost_regex": LOCALHOST_HOST_REGEX.removeprefix("(?i)").removeprefix("^"),
        "dot_segment_regex": dotsegments.TARGET_REGEX.removeprefix("(?i)"),
        "hop_id": table.hop_id,
        "tunnels": [tunnel_view(i, t, table.certs.get(t.name), table.timeout_of(t)) for i, t in enumerate(table.tunnels)],
    }
    config = render_template(env, MAIN_TEMPLATE, context, engine="nginx", quote_errors=(NginxQuoteError,))
    files = {
        "nginx.conf": config,
        "generation.conf": generation_conf(0),
        "pages/404.html": not_found_page(table),
    }
    for status in PLAIN_PAGES:
        files[f"pages/plain-{status}.html"] = pages.plain_page(status)
    for tunnel in table.tunnels:
        backends = ", ".join(b.url for b in tunnel.backends)
        files["pages/" + _page_name(tunnel)] = pages.bad_gateway_page(
            tunnel.name, backends, "the connection failed or was reset")
        files["pages/" + _page_name(tunnel, 504)] = pages.gateway_timeout_page(
            tunnel.name, backends, table.timeout_of(tunnel))
        files["pages/" + _page_name(tunnel, 508)] = pages.loop_page(tunnel.name)
    return files


#: `render --for existing` formats: an include-able fragment, or a complete nginx.conf.
EXISTING_FORMATS = ("fragment", "full")


def render_existing_files(table: ExistingTable, options: RenderOptions, fmt: str) -> dict[str, str]:
    """Config for an nginx gotunnel does not run: `gotunnel.conf`, a fragment to include in its
    http block (upstream, map and server blocks only), or `nginx.conf`, complete but without
    `daemon`, `user`, `pid` or temp paths (the host's defaults stay). Every name it defines starts
    with `gotunnel_`, certificate paths are absolute, and there are no gotunnel pages."""
    views = []
    for index, site in enumerate(table.sites):
        if site.tls.mode == "acme":
            raise EngineValidationError(
                f"nginx: tunnel {site.tunnel.name!r} has tls = \"acme\", but nginx does not get certificates "
                "itself; give tls = {cert = PATH, key = PATH} (from certbot, say), or use Caddy")
        https = site.tls.mode == "files"
        cert = CertFiles(site.tls.cert, site.tls.key) if https else None
        views.append(tunnel_view(index, site.tunnel, cert, naming=EXISTING_NAMING, server_names=site.hosts, https=https))
    listen = table.listen
    values = [value for view in views for _, value in (*view["request_add"], *view["response_add"])]
    context = {
        "mode": fmt,
        "var_prefix": EXISTING_NAMING.var_prefix,
        # A fragment defines the `$` variable (a `geo` block) only when a value needs it.
        "needs_dollar": fmt == "full" or any("$" in value for value in values),
        "http2": options.http2,
        "workers": options.workers,
        "worker_connections": options.worker_connections,
        "keepalive": options.keepalive,
        "log_level": "warn",
        "metrics_socket": None,  # gotunnel does not run this nginx: nothing to count
        "metrics_format": LOG_FORMAT,
        "user": None,
        "listen": {
            "http": _listen(listen.bind, listen.http_port),
            "https": _listen(listen.bind, listen.https_port),
            "https_suffix": "" if listen.https_port == 443 else f":{listen.https_port}",
        },
        "default_cert": None,
        "pages_dir": "",
        "tunnels": views,
    }
    env = make_environment(options.template_dir, existing=True)
    config = render_template(env, MAIN_TEMPLATE, context, engine="nginx", quote_errors=(NginxQuoteError,))
    return {("gotunnel.conf" if fmt == "fragment" else "nginx.conf"): config}


#: Stands for the requested host in the 404 page until it becomes an SSI `echo` (see below).
_HOST_MARK = "gotunnel-requested-host-7f3a9c"
#: nginx fills in the host at request time, HTML-escaped (`encoding="entity"`).
SSI_HOST = '<!--# echo var="host" encoding="entity" -->'


def not_found_page(table: RouteTable) -> str:
    """The 404 page, naming the requested host through SSI. Everything else in the page is
    escaped by `pages.py` (a `<` is `&lt;`), so the only SSI directive is the one put here."""
    page = pages.table_not_found_page(_HOST_MARK, table)
    assert page.count(_HOST_MARK) == 1 and "<!--#" not in page
    return page.replace(_HOST_MARK, SSI_HOST)


def generation_conf(generation: int) -> str:
    """Body of the control socket's /generation location: which config generation this is."""
    return f'return 200 "{int(generation)}\\n";\n'


def render_options(settings: Mapping[str, Any], options: Mapping[str, Any],
                   metrics_socket: str | None = None) -> RenderOptions:
    """Render options from the settings and the engine's (validated) options; `metrics_socket`: the
    daemon's access-log socket while the engine runs with metrics on."""
    user = None
    if os.geteuid() == 0:
        import grp
        import pwd

        # Root daemon (CI, containers): workers would switch to `nobody` and lose access to the
        # 0700 state dir. Run them as the daemon's own user: nginx never gains privileges.
        user = (pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name)
    level = settings.get("log_level") or "info"
    return RenderOptions(
        workers=options["workers"],
        worker_connections=options["worker_connections"],
        keepalive=options["keepalive"],
        log_level={"debug": "info", "info": "warn", "warning": "warn", "error": "error"}.get(level, "warn"),
        user=user,
        http2=bool(settings.get("http2", True)),
        template_dir=settings.get("template_dir"),
        metrics_socket=metrics_socket,
    )
