"""Route table -> Caddy's native JSON config, built as Python dicts and dumped with `json.dumps`.

Injection-proofing has two layers:

* JSON syntax: every value is a Python string placed in a dict and serialised by `json.dumps`,
  so no value can end a string or add a key, whatever it holds.
* Caddy placeholders: Caddy expands `{...}` placeholders inside many string fields, header
  values and `static_response` bodies included, so a header value `{env.SECRET}` would leak the
  engine's environment. Every user-derived string that lands in such a field goes through
  `caddy_literal`, which escapes `{` and `}` as `\\{` and `\\}` (Caddy's replacer turns them back
  into literal braces). Fields where Caddy does not expand placeholders, or where the models
  already forbid braces (names, backend URLs, paths), stay as they are; file paths that reach
  the config (certificates, the admin socket, storage) are refused when they contain braces or
  control characters, with an error naming the path (`check_config_path`).

The only placeholders gotunnel itself puts into the config are Caddy's own request values
(`{http.request.host}`, `{http.request.uri}`, ...), spliced in after escaping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from gotunnel_core import dotsegments, pages
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.lan import LOCALHOST_HOST_REGEX, LOOPBACK_CIDRS
from gotunnel_core.loops import HOP_HEADER
from gotunnel_core.models import DEFAULT_HOP_ID, NAME_SUFFIXES, Backend, CertFiles, Listen, RouteTable, Tunnel

from .metrics import LOGGER, UPSTREAM_ERROR_FIELD, log_config

HTTP_SERVER = "gotunnel_http"
HTTPS_SERVER = "gotunnel_https"
DEFAULT_TAG = "gotunnel:default"
HTML = ["text/html; charset=utf-8"]
#: Trusting every peer makes Caddy append the client address to an incoming X-Forwarded-For
#: (as the builtin engine and nginx's `$proxy_add_x_forwarded_for` do) instead of replacing
#: it; X-Forwarded-Proto and X-Forwarded-Host are then set explicitly, never taken from the client.
TRUST_ALL = {"source": "static", "ranges": ["0.0.0.0/0", "::/0"]}
#: How long a backend whose connection failed sits out when its tunnel has no active check
#: (the builtin engine's PASSIVE_EJECT_SECONDS).
PASSIVE_EJECT_SECONDS = 10.0
#: Reason shown on the 502 page. Caddy's own error text can quote bytes of a malformed upstream
#: answer, so it is never put into the HTML.
BAD_GATEWAY_REASON = "the connection failed or the backend's answer was invalid"

#: How long websockets opened under an older config stay open after a route change (a day:
#: practically until the client or backend closes them).
STREAM_CLOSE_DELAY = 86400.0

_SENTINEL = "\x00gotunnel-placeholder-{}\x00"

#: The HTTP versions Caddy's transport speaks per backend scheme: HTTP/1.1; for https whatever ALPN
#: picks of h2 and http/1.1 (Go sends websocket upgrades over HTTP/1.1 regardless); for h2c
#: cleartext HTTP/2 with prior knowledge.
UPSTREAM_VERSIONS: dict[str, list[str]] = {"http": ["1.1"], "https": ["1.1", "2"], "h2c": ["h2c", "2"]}
#: Caddy's Go runtime advertises extended CONNECT (RFC 8441) only with this GODEBUG (off by default
#: since Go 1.24, golang/go#71128); Caddy's reverse proxy then bridges such websockets to HTTP/1.1
#: upgrades towards the backend (caddyserver/caddy#6567).
EXTENDED_CONNECT_GODEBUG = "http2xconnect=1"


def caddy_literal(text: str) -> str:
    """Escape `text` so Caddy's placeholder replacer yields it verbatim (`{` -> `\\{`, `}` -> `\\}`)."""
    return text.replace("{", "\\{").replace("}", "\\}")


def check_config_path(path: str, what: str) -> str:
    """A file or socket path that goes into the config: refuse braces (placeholders) and controls."""
    if not path or any(ch in "{}" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise EngineValidationError(
            f"the Caddy engine cannot use {what} {path!r}: braces and control characters are not allowed "
            "in paths it hands to Caddy (Caddy would read braces as placeholders)"
        )
    return path


def duration(seconds: float) -> str:
    """A Caddy duration string with millisecond precision (`5s` -> `5000ms`)."""
    return f"{max(1, round(seconds * 1000))}ms"


def listen_address(bind: str, port: int) -> str:
    return f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"


@dataclass(frozen=True)
class RenderOptions:
    """Where the running engine keeps its admin socket and storage; None in a plain `render`."""

    admin_socket: str | None = None
    storage_dir: str | None = None
    grace_period: float = 5.0
    log_level: str = "WARN"
    via: bool = False  # the `via` setting: keep Caddy's own Via header
    http2: bool = True  # the `http2` setting: offer h2 by ALPN on the HTTPS listener
    #: port -> inherited listening socket (`fd/N`) when the daemon owns the sockets; None: bind.
    listen_fds: Mapping[int, int] | None = None
    #: The daemon's access-log datagram socket (metrics), if any.
    metrics_socket: str | None = None

    def listen_address(self, bind: str, port: int) -> str:
        if self.listen_fds is not None and port in self.listen_fds:
            return f"fd/{self.listen_fds[port]}"
        return listen_address(bind, port)


def hostnames(tunnel: Tunnel) -> list[str]:
    """Host matcher values: `NAME.localhost`, `NAME.local` and their fully-qualified (trailing-dot) forms."""
    names = [f"{tunnel.name}.{suffix}" for suffix in NAME_SUFFIXES]
    return names + [n + "." for n in names]


def _sni_pattern(tunnel: Tunnel, server_names: Iterable[str] | None = None) -> str:
    """RE2 pattern for the TLS server names that belong to `tunnel` (or no SNI at all);
    `server_names`: real names (`api.example.com`, `*.api.example.com`) instead of NAME.localhost/.local."""
    if server_names is not None:
        parts = [r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\." + re.escape(n[2:]) if n.startswith("*.") else re.escape(n)
                 for n in server_names]
        return rf"^(?i)(?:(?:{'|'.join(parts)})\.?)?$"
    if tunnel.is_wildcard:
        base = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\." + re.escape(tunnel.name[2:])
    else:
        base = re.escape(tunnel.name)
    suffixes = "|".join(re.escape(s) for s in NAME_SUFFIXES)
    return rf"^(?i)(?:{base}\.(?:{suffixes})\.?)?$"


def _ordered(tunnels: Iterable[Tunnel]) -> list[Tunnel]:
    """Exact names before wildcards (an exact `a.x` beats `*.x`), each group by name."""
    return sorted(tunnels, key=lambda t: (t.is_wildcard, t.name))


def check_backends(tunnel: Tunnel) -> None:
    """One Caddy proxy handler has one transport and one URI rewrite: refuse what it cannot express."""
    schemes = {b.scheme for b in tunnel.backends}
    if len(schemes) > 1:
        raise EngineValidationError(
            f"tunnel {tunnel.name!r} mixes {' and '.join(sorted(schemes))} backends; the Caddy engine needs one scheme per tunnel"
        )
    prefixes = {b.path for b in tunnel.backends}
    if len(prefixes) > 1:
        raise EngineValidationError(
            f"tunnel {tunnel.name!r} has backends with different path prefixes ({', '.join(sorted(prefixes))}); "
            "the Caddy engine needs one prefix per tunnel"
        )


def _page(body: str, placeholders: dict[str, str]) -> str:
    """An HTML page as a static_response body: braces escaped, then our placeholders spliced in."""
    body = caddy_literal(body)
    for key, placeholder in placeholders.items():
        body = body.replace(_SENTINEL.format(key), placeholder)
    return body


def _static(status: int, body: str = "", headers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    handler: dict[str, Any] = {"handler": "static_response", "status_code": status}
    if headers:
        handler["headers"] = headers
    if body:
        handler["body"] = body
    return handler


#: The connection's own peer on this machine's loopback (`remote_ip` ignores forwarded headers,
#: unlike `client_ip`): the detailed pages and `.localhost` names are for it (gotunnel_core.lan).
LOOPBACK = {"remote_ip": {"ranges": list(LOOPBACK_CIDRS)}}
NOT_LOOPBACK = {"not": [LOOPBACK]}


def plain_body(status: int) -> str:
    """The page a LAN peer gets (names nothing)."""
    return _page(pages.plain_page(status), {})


def not_found_body(table: RouteTable) -> str:
    """The 404 listing page, with the requested host filled in by Caddy at request time.

    The Host header reaches the page unescaped; Go's HTTP server refuses Host values with
    characters outside RFC 3986's host set (no `<`, `>`, `"`, spaces or braces), so it cannot
    form markup.
    """
    raw = pages.table_not_found_page(_SENTINEL.format("host"), table)
    return _page(raw, {"host": "{http.request.host}"})


def bad_gateway_body(tunnel: Tunnel) -> str:
    if len(tunnel.backends) == 1:
        return _page(pages.bad_gateway_page(tunnel.name, tunnel.backends[0].url, BAD_GATEWAY_REASON), {})
    url = f"{tunnel.backends[0].scheme}://" + _SENTINEL.format("upstream")
    raw = pages.bad_gateway_page(tunnel.name, url, BAD_GATEWAY_REASON)
    return _page(raw, {"upstream": "{http.reverse_proxy.upstream.hostport}"})


def unavailable_body(tunnel: Tunnel) -> str:
    return _page(pages.unavailable_page(tunnel.name, list(tunnel.backends)), {})


def timeout_body(tunnel: Tunnel, seconds: float) -> str:
    return _page(pages.gateway_timeout_page(tunnel.name, ", ".join(b.url for b in tunnel.backends), seconds), {})


def loop_body(tunnel: Tunnel) -> str:
    return _page(pages.loop_page(tunnel.name), {})


def _header_ops(add: tuple[tuple[str, str], ...], remove: tuple[str, ...],
                fixed: dict[str, list[str]] | None = None) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    set_ = dict(fixed or {})
    for name, value in add:
        set_[name] = [caddy_literal(value)]
    if set_:
        ops["set"] = set_
    if remove:
        ops["delete"] = list(remove)
    return ops


def reverse_proxy(tunnel: Tunnel, *, via: bool = False, hop_id: str = DEFAULT_HOP_ID,
                  upstream_timeout: float = 60.0) -> dict[str, Any]:
    """The `reverse_proxy` handler for one tunnel: balancing, health checks, headers, streaming."""
    backends: tuple[Backend, ...] = tunnel.backends
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": b.address} for b in backends],
        # No `flush_interval`: Caddy flushes SSE (text/event-stream) and responses of unknown
        # length (chunked streams) at once by itself; forcing a flush after every write as well
        # cost 38 % of its throughput on small responses (http-small: 0.62x -> 0.96x caddy-ref).
        # Caddy closes upgraded connections (websockets) when the config that opened them is
        # unloaded, i.e. on every route change; keep them open instead, as the other engines do.
        "stream_close_delay": duration(STREAM_CLOSE_DELAY),
    }
    if len(backends) > 1:
        handler["load_balancing"] = {
            "selection_policy": {"policy": "weighted_round_robin", "weights": [b.weight for b in backends]},
            # A backend that refuses the connection is skipped for the next one, as the builtin engine does.
            "retries": len(backends) - 1,
        }
    health: dict[str, Any] = {}
    if tunnel.health is not None:
        check = tunnel.health
        health["active"] = {
            "uri": backends[0].path + check.path,
            "interval": duration(check.interval),
            "timeout": duration(check.timeout),
            "passes": check.healthy_threshold,
            "fails": check.unhealthy_threshold,
        }
    if len(backends) > 1 or tunnel.health is not None:
        # A lone backend without an active check is never ejected: the client sees a 502 naming it.
        eject = tunnel.health.interval * tunnel.health.healthy_threshold if tunnel.health else PASSIVE_EJECT_SECONDS
        health["passive"] = {"fail_duration": duration(eject), "max_fails": 1}
    if health:
        handler["health_checks"] = health
    fixed = {"X-Forwarded-Proto": ["{http.request.scheme}"], "X-Forwarded-Host": ["{http.request.hostport}"],
             HOP_HEADER: [hop_id]}
    if tunnel.host_header == "backend":
        fixed["Host"] = ["{http.reverse_proxy.upstream.hostport}"]
    elif tunnel.host_header != "preserve":
        fixed["Host"] = [caddy_literal(tunnel.host_header)]
    request = _header_ops(tunnel.headers.request.add, tunnel.headers.request.remove, fixed)
    response = _header_ops(tunnel.headers.response.add, tunnel.headers.response.remove)
    if not via:
        # Caddy adds `Via: 1.1 Caddy` both ways; the other engines add Via only with `via = true`.
        # (The response's is added after these ops run: `tunnel_routes` drops it with a deferred op.)
        request["delete"] = sorted(set(request.get("delete", [])) | {"Via"})
    handler["headers"] = {"request": request, "response": response} if response else {"request": request}
    # No Accept-Encoding of the proxy's own: the backend sees the client's, as with the other engines.
    # Time to the backend's response head; then Caddy answers 504 (the error routes' page).
    transport: dict[str, Any] = {"protocol": "http", "compression": False,
                                 "versions": UPSTREAM_VERSIONS[backends[0].scheme],
                                 "response_header_timeout": duration(upstream_timeout)}
    if backends[0].scheme == "https":
        # Like the builtin engine: a local https backend usually has a self-signed certificate.
        transport["tls"] = {"insecure_skip_verify": True}
    handler["transport"] = transport
    return handler


def _detailed_or_plain(status: int, detailed: str) -> list[dict[str, Any]]:
    """Two routes answering `status`: the detailed page to loopback peers, the plain one to the LAN."""
    return [
        {"match": [LOOPBACK], "handle": [_static(status, detailed, {"Content-Type": HTML})], "terminal": True},
        {"handle": [_static(status, plain_body(status), {"Content-Type": HTML})], "terminal": True},
    ]


def tunnel_routes(tunnel: Tunnel, listen: Listen, *, https: bool, via: bool = False, hop_id: str = DEFAULT_HOP_ID,
                  upstream_timeout: float = 60.0, server_names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The subroute serving one tunnel on the HTTP (`https=False`) or HTTPS listener
    (`server_names`: its real names, for a Caddy gotunnel does not run)."""
    routes: list[dict[str, Any]] = [
        {   # a dot segment in the path: 400, before the prefix is joined (gotunnel_core.dotsegments)
            "match": [{"vars_regexp": {"{http.request.uri}": {"pattern": dotsegments.TARGET_REGEX}}}],
            "handle": [_static(400, plain_body(400), {"Content-Type": HTML})],
            "terminal": True,
        },
        {   # this gotunnel's own loop marker: the request went round (gotunnel_core.loops)
            "match": [{"header": {HOP_HEADER: [hop_id]}}],
            "handle": [{"handler": "subroute", "routes": _detailed_or_plain(508, loop_body(tunnel))}],
            "terminal": True,
        },
    ]
    if https:
        # 421 when the TLS name belongs to another tunnel than Host (the builtin engine's check).
        pattern = _sni_pattern(tunnel, server_names)
        routes.append({
            "match": [{"not": [{"vars_regexp": {"{http.request.tls.server_name}": {"pattern": pattern}}}]}],
            "handle": [_static(421, "Misdirected Request: the TLS name does not match Host\n",
                               {"Content-Type": ["text/plain; charset=utf-8"], "Connection": ["close"]})],
            "terminal": True,
        })
    elif tunnel.redirect_https:
        port = "" if listen.https_port == 443 else f":{listen.https_port}"
        routes.append({
            "handle": [_static(tunnel.redirect_code,
                               headers={"Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]})],
            "terminal": True,
        })
        return routes
    handlers: list[dict[str, Any]] = []
    if not via:
        handlers.append({"handler": "headers", "response": {"delete": ["Via"], "deferred": True}})
    prefix = tunnel.backends[0].path
    if prefix:
        handlers.append({"handler": "rewrite", "uri": caddy_literal(prefix) + "{http.request.uri}"})
    handlers.append(reverse_proxy(tunnel, via=via, hop_id=hop_id, upstream_timeout=upstream_timeout))
    routes.append({"handle": handlers, "terminal": True})
    return routes


def error_routes(table: RouteTable, tunnels: list[Tunnel], metrics: bool = False) -> list[dict[str, Any]]:
    """502, 503 and 504 pages per tunnel, for errors the proxy handler returns: the detailed page to
    loopback peers, the plain one to LAN peers (with metrics on, the access-log record of a 502 or
    504 is marked as an upstream error)."""
    routes = []
    mark = [{"handler": "log_append", "key": UPSTREAM_ERROR_FIELD, "value": "1"}] if metrics else []
    for tunnel in tunnels:
        pages_by_status = ((502, bad_gateway_body(tunnel)), (503, unavailable_body(tunnel)),
                           (504, timeout_body(tunnel, table.timeout_of(tunnel))))
        sub = []
        for status, body in pages_by_status:
            marks = mark if status in (502, 504) else []
            sub += [
                {"match": [{"vars": {"{http.error.status_code}": [str(status)]}, **LOOPBACK}],
                 "handle": [*marks, _static(status, body, {"Content-Type": HTML})], "terminal": True},
                {"match": [{"vars": {"{http.error.status_code}": [str(status)]}}],
                 "handle": [*marks, _static(status, plain_body(status), {"Content-Type": HTML})], "terminal": True},
            ]
        routes.append({
            "match": [{"host": hostnames(tunnel)}],
            "handle": [{"handler": "subroute", "routes": sub}],
            "terminal": True,
        })
    return routes


def _lan_guard_routes() -> list[dict[str, Any]]:
    """Routes every server starts with: CONNECT is refused (405; gotunnel is no forward proxy),
    except an RFC 8441 websocket's extended CONNECT (it carries `:protocol`), and a LAN peer
    asking for a `.localhost` name gets the plain 404 (gotunnel_core.lan)."""
    return [
        {"match": [{"method": ["CONNECT"], "not": [{"header": {":protocol": []}}]}],
         "handle": [_static(405, plain_body(405), {"Content-Type": HTML, "Connection": ["close"]})],
         "terminal": True},
        {"match": [{"vars_regexp": {"{http.request.host}": {"pattern": LOCALHOST_HOST_REGEX}}, **NOT_LOOPBACK}],
         "handle": [_static(404, plain_body(404), {"Content-Type": HTML})],
         "terminal": True},
    ]


def _server(table: RouteTable, port: int, tunnels: list[Tunnel], *, https: bool, not_found: str,
            options: RenderOptions) -> dict[str, Any]:
    via = options.via
    listen = table.listen
    routes = _lan_guard_routes() + [
        {"match": [{"host": hostnames(t), **({} if t.lan else LOOPBACK)}],  # lan = false: loopback peers only
         "handle": [{"handler": "subroute", "routes": tunnel_routes(
             t, listen, https=https, via=via, hop_id=table.hop_id, upstream_timeout=table.timeout_of(t))}],
         "terminal": True}
        for t in tunnels
    ]
    routes += _detailed_or_plain(404, not_found)
    server: dict[str, Any] = {
        "listen": [options.listen_address(listen.bind, port)],
        "routes": routes,
        "errors": {"routes": error_routes(table, tunnels, metrics=options.metrics_socket is not None)},
        "automatic_https": {"disable": True},
        "trusted_proxies": TRUST_ALL,
        # No HTTP/3 (a UDP listener); HTTP/2 only where TLS negotiates it, as browsers use it.
        "protocols": ["h1", "h2"] if https and options.http2 else ["h1"],
    }
    if options.metrics_socket is not None:
        server["logs"] = {"default_logger_name": LOGGER}
    return server


def cert_tag(name: str) -> str:
    return f"gotunnel:{name}"


def tls_app(table: RouteTable) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`tls.certificates.load_files` and the HTTPS listener's connection policies (SNI -> tag)."""
    files: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    for tunnel in _ordered(table.tunnels):
        cert = table.certs.get(tunnel.name)
        if cert is None:
            continue
        files.append(_load(cert, cert_tag(tunnel.name), f"certificate of tunnel {tunnel.name!r}"))
        policies.append({
            "match": {"sni": [f"{tunnel.name}.{suffix}" for suffix in NAME_SUFFIXES]},
            "certificate_selection": {"any_tag": [cert_tag(tunnel.name)]},
        })
    default = table.default_cert
    if default is None and table.certs:
        default = table.certs[sorted(table.certs)[0]]
    if default is not None:
        files.append(_load(default, DEFAULT_TAG, "default certificate"))
        # No matcher: every other server name (and none) gets the default certificate.
        policies.append({"certificate_selection": {"any_tag": [DEFAULT_TAG]}})
    return {"certificates": {"load_files": files}}, policies


def _load(cert: CertFiles, tag: str, what: str) -> dict[str, Any]:
    return {
        "certificate": check_config_path(cert.cert, what),
        "key": check_config_path(cert.key, what + " key"),
        "format": "pem",
        "tags": [tag],
    }


def build_config(table: RouteTable, options: RenderOptions | None = None) -> dict[str, Any]:
    """The complete Caddy config for `table` as a JSON-ready dict."""
    options = options or RenderOptions()
    tunnels = _ordered(table.tunnels)
    for tunnel in tunnels:
        check_backends(tunnel)
    not_found = not_found_body(table)
    tls, policies = tls_app(table)
    http_server = _server(table, table.listen.http_port, tunnels, https=False, not_found=not_found,
                          options=options)
    served_tls = [t for t in tunnels if t.https]  # a --no-https tunnel answers on HTTP only
    https_server = _server(table, table.listen.https_port, served_tls, https=True, not_found=not_found,
                           options=options)
    https_server["tls_connection_policies"] = policies
    config: dict[str, Any] = {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {
            "level": options.log_level,
            "writer": {"output": "stderr"},
            "encoder": {"format": "json"},
        }}},
        "apps": {
            "http": {
                "grace_period": duration(options.grace_period),
                "servers": {HTTP_SERVER: http_server, HTTPS_SERVER: https_server},
            },
            "tls": tls,
        },
    }
    if options.metrics_socket is not None:
        logs = config["logging"]["logs"]
        logs["default"]["exclude"] = ["http.log.access"]
        logs[LOGGER] = log_config(check_config_path(options.metrics_socket, "metrics socket"))
    if options.admin_socket is not None:
        config["admin"] = {
            "listen": "unix/" + check_config_path(options.admin_socket, "admin socket"),
            "config": {"persist": False},
        }
    if options.storage_dir is not None:
        config["storage"] = {"module": "file_system", "root": check_config_path(options.storage_dir, "storage dir")}
    return config


def render_json(table: RouteTable, options: RenderOptions | None = None) -> str:
    """The config as the text written to `caddy.json` (stable key order, so identical tables diff clean)."""
    return json.dumps(build_config(table, options), indent=2, sort_keys=True) + "\n"
