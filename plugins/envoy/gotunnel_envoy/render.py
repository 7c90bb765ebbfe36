"""Render a `RouteTable` into Envoy's config: a bootstrap plus file-based LDS, CDS and RDS.

Everything is built as Python dicts and serialised with `json.dumps`, so no value can change the
structure of a document. Values Envoy interprets further are escaped here:

- header values (`request_headers_to_add`, `response_headers_to_add`) go through Envoy's
  substitution formatter, where `%NAME%` expands (`%DOWNSTREAM_REMOTE_ADDRESS%`): every `%` of a
  user's value is doubled (`%%`), so a value always arrives literally;
- host names and paths in regexes are escaped for RE2 (the models only allow `[a-z0-9.-]`);
- pages are HTML-escaped by `gotunnel_core.pages` and carried as route metadata, which the
  local-reply formatter copies verbatim (metadata is not a format string).

Layout (relative to the engine's config directory, `<work_dir>/current` when running):

    bootstrap.json          admin endpoint, node, dynamic_resources -> lds.json / cds.json
    lds.json                the HTTP and HTTPS listeners (one TLS filter chain per tunnel, by SNI)
    cds.json                one cluster per tunnel (weights, health checks, outlier detection)
    rds/<name>.json         one route configuration per connection manager

The same builders serve the team edge (`gotunnel_envoy.team`): with `EnvoyOptions.ads` every
subscription points at the ADS stream instead of a file, and `suffixes` replaces `.localhost`
/ `.local` with the team domain; the hub then sends these very resources over delta xDS.

Envoy reads LDS/CDS/RDS through `path_config_source` with `watched_directory` = the work dir:
the supervisor publishes a new generation by renaming the `current` symlink, which is a move
in the watched directory, and Envoy re-reads every file through the new link. Route changes
go through RDS, so the listeners (and their open connections, websockets included) stay put;
only the TLS filter chain of a tunnel whose certificate changed is drained.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gotunnel_core import dotsegments, pages
from gotunnel_core.errors import ValidationError
from gotunnel_core.lan import LOOPBACK_CIDRS
from gotunnel_core.loops import HOP_HEADER
from gotunnel_core.models import NAME_SUFFIXES, Backend, CertFiles, Listen, RouteTable, Tunnel

T = "type.googleapis.com/"
HCM_TYPE = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = T + "envoy.extensions.filters.http.router.v3.Router"
TLS_INSPECTOR_TYPE = T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
DOWNSTREAM_TLS_TYPE = T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
UPSTREAM_HTTP_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_HTTP_TYPE = T + UPSTREAM_HTTP_KEY
PRESERVE_CASE_TYPE = T + "envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig"
PREVIOUS_HOSTS_TYPE = T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
DIRECT_RESPONSE_TYPE = T + "envoy.extensions.filters.network.direct_response.v3.Config"
LISTENER_TYPE = T + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = T + "envoy.config.cluster.v3.Cluster"
ROUTE_CONFIG_TYPE = T + "envoy.config.route.v3.RouteConfiguration"
DOWNSTREAM_CONN_MONITOR_TYPE = (
    T + "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

#: Metadata namespace for what the local-reply pages read (`%METADATA(ROUTE:gotunnel:...)%`).
NS = "gotunnel"
HTML = "text/html; charset=utf-8"
#: Circuit-breaker thresholds: high enough never to be the bottleneck (Envoy's default 1024 queues).
UNLIMITED = 1_000_000
#: Headers Envoy refuses to let header rules set or remove, in either direction ("`:`-prefixed or
#: host headers may not be modified"; pseudo-headers are no HTTP tokens, so only Host is left).
RESTRICTED_HEADERS = frozenset({"host"})
#: `Host` values the 404 page may echo: RFC 3986 reg-name/IP-literal characters plus a port. A
#: Host outside this set (it could carry HTML) is shown as a fixed text instead: Envoy has no
#: HTML-escaping formatter.
SAFE_HOST_RE = r"^[A-Za-z0-9._~\-:\[\]]+$"
INVALID_HOST_TEXT = "(a Host header that is not a host name)"
_SENTINEL = "\x00gotunnel-{}\x00"
#: RFC 8441: Envoy turns a websocket's HTTP/2 extended CONNECT into an HTTP/1.1 Upgrade towards
#: the backend but adds no Sec-WebSocket-Key (envoy#8547), which RFC 6455 servers require: they
#: answer 400 and the browser's websocket fails (a Vite HMR socket never connects). The route for
#: such requests adds a well-formed key (16 bytes, base64: "gotunnel-rfc8441"). It is a nonce only
#: towards the backend on this hop; the client's side of the handshake is HTTP/2's own.
RFC8441_WEBSOCKET_KEY = "Z290dW5uZWwtcmZjODQ0MQ=="


@dataclass(frozen=True)
class EnvoyOptions:
    """Everything `render` needs besides the route table; derived from the engine settings."""

    work_dir: Path
    admin_socket: str | None = None  # unix socket path; None -> 127.0.0.1, port chosen at run time
    idle_timeout: float = 75.0
    header_timeout: float = 10.0
    max_header_size: int = 65536
    max_connections: int = 10000
    via: bool = False
    upstream_idle_timeout: float = 30.0
    http2: bool = True  # offer h2 by ALPN on the HTTPS listener (the `http2` setting)
    #: Host suffixes every tunnel answers under (the team edge: its team domain).
    suffixes: tuple[str, ...] = NAME_SUFFIXES
    #: Subscribe RDS through the ADS stream (the team edge) instead of watched files.
    ads: bool = False
    #: The 404 page lists the active tunnels (off on a team edge: thousands of names).
    list_tunnels_on_404: bool = True
    #: Tunnel name -> the Host header sent upstream (the team edge: the agent's local name).
    upstream_hosts: Mapping[str, str] = field(default_factory=dict)
    #: (name, labels): the HTTPS connection manager picks its route configuration by the first
    #: `labels` labels of the Host (scoped routes, SRDS; the team edge: one per name) instead
    #: of one RDS resource for every name.
    scoped_routes: tuple[str, int] | None = None

    @property
    def config_dir(self) -> Path:
        """Where the running Envoy reads its files: the supervisor's `current` symlink."""
        return self.work_dir / "current"


# ----- escaping -----------------------------------------------------------------------------------

def escape_format(value: str) -> str:
    """A literal for Envoy's substitution formatter (header values, local-reply formats): `%` -> `%%`."""
    return value.replace("%", "%%")


def _re2_literal(text: str) -> str:
    """`text` as an RE2 literal (names and suffixes hold only `[a-z0-9.-]`; escape all non-word)."""
    return "".join(ch if ch.isalnum() or ch == "_" else "\\" + ch for ch in text)


def _seconds(value: float) -> str:
    """A protobuf JSON Duration."""
    return f"{value:.3f}s"


# ----- names ------------------------------------------------------------------------------------------

def _slug(name: str) -> str:
    """A tunnel name as part of a file/resource name: `*.preview` -> `_wild.preview`."""
    return name.replace("*", "_wild")


def cluster_name(tunnel: Tunnel) -> str:
    return f"tunnel_{_slug(tunnel.name)}"


def websocket_cluster_name(tunnel: Tunnel) -> str:
    """The cluster websockets use: an https tunnel's HTTP/1.1-only twin (see `clusters`), else the tunnel's."""
    return cluster_name(tunnel) + "_h1" if _scheme(tunnel) == "https" else cluster_name(tunnel)


def _domains(tunnel: Tunnel, suffixes: tuple[str, ...] = NAME_SUFFIXES) -> list[str]:
    """Every Host a tunnel answers: `NAME.SUFFIX`, also with a trailing dot (ports are ignored
    by `ignore_port_in_host_matching`). A wildcard `*.x` becomes Envoy's suffix wildcard."""
    out: list[str] = []
    for suffix in suffixes:
        out += [f"{tunnel.name}.{suffix}", f"{tunnel.name}.{suffix}."]
    return out


def _server_names(tunnel: Tunnel, suffixes: tuple[str, ...] = NAME_SUFFIXES) -> list[str]:
    return [f"{tunnel.name}.{suffix}" for suffix in suffixes]


# ----- pages --------------------------------------------------------------------------------------------

def _split_page(page: str, *sentinels: str) -> list[str]:
    """Cut a rendered page at its sentinels (which HTML escaping leaves untouched)."""
    parts: list[str] = []
    rest = page
    for sentinel in sentinels:
        head, found, rest = rest.partition(sentinel)
        if not found:
            raise AssertionError(f"page lost its placeholder {sentinel!r}")
        parts.append(head)
    parts.append(rest)
    return parts


def _not_found_metadata(table: RouteTable, visible: tuple[Tunnel, ...]) -> dict[str, str]:
    mark = _SENTINEL.format("host")
    names = {"mdns": table.mdns, "hosts": table.hosts}
    head, tail = _split_page(pages.not_found_page(mark, visible, table.listen, **names), mark)
    return {
        "nf_head": head,
        "nf_tail": tail,
        "nf_invalid": pages.not_found_page(INVALID_HOST_TEXT, visible, table.listen, **names),
    }


def _tunnel_metadata(tunnel: Tunnel, upstream_timeout: float = 60.0) -> dict[str, str]:
    url, reason = _SENTINEL.format("url"), _SENTINEL.format("reason")
    head, mid, tail = _split_page(pages.bad_gateway_page(tunnel.name, url, reason), url, reason)
    return {
        "tunnel": tunnel.name,
        "bg_head": head,
        "bg_mid": mid,
        "bg_tail": tail,
        "unavailable": pages.unavailable_page(tunnel.name, tunnel.backends),
        "timeout": pages.gateway_timeout_page(tunnel.name, ", ".join(b.url for b in tunnel.backends), upstream_timeout),
    }


#: Loopback and LAN peers get separate filter chains (`direct_source_prefix_ranges`: the
#: connection's own address, never a header), each with its own route configuration: the LAN's
#: holds only `lan` tunnels under `.local` names, and its local replies are the plain pages
#: (gotunnel_core.lan). Route configuration names of the LAN side end in this suffix.
LAN_SUFFIX = "_lan"


def _loopback_ranges() -> list[dict[str, Any]]:
    return [{"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}
            for net in map(ipaddress.ip_network, LOOPBACK_CIDRS)]


def _plain(status: int) -> dict[str, Any]:
    """A direct response with the plain page (LAN peers; nothing named)."""
    return {"status": status, "body": {"inline_string": pages.plain_page(status)}}


def _html(route: dict[str, Any]) -> dict[str, Any]:
    """A direct-response route whose body is an HTML page."""
    route["response_headers_to_add"] = [{"header": {"key": "Content-Type", "value": HTML},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return route


#: (response flags, the reason shown on the 502 page)
_BAD_GATEWAY_REASONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("UF",), "the connection failed"),
    (("URX",), "every connection attempt failed"),
    (("UC", "UR"), "the connection was closed before a complete response"),
    (("UPE", "DPE"), "the response was not valid HTTP"),
)


def local_reply_config(lan: bool = False) -> dict[str, Any]:
    """Mappers turning Envoy's own answers into gotunnel's pages (the same for every manager of a side).

    On the loopback side pages come from route metadata (`%METADATA(ROUTE:gotunnel:KEY)%`), so
    one set of mappers serves every tunnel; the failing backend's URL comes from its endpoint
    metadata. On the LAN side (`lan`) every page is the plain one. Both sides first answer
    `OPTIONS *` (200, empty) and turn Envoy's 403 for CONNECT into 405, as every engine does.
    """

    def fmt(text: str) -> dict[str, Any]:
        return {"text_format_source": {"inline_string": text}, "content_type": HTML}

    def meta(key: str) -> str:
        return f"%METADATA(ROUTE:{NS}:{key})%"

    def status(code: int) -> dict[str, Any]:
        return {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": "gotunnel.unused"}}}}

    def flags(*names: str) -> dict[str, Any]:
        return {"response_flag_filter": {"flags": list(names)}}

    def header(name: str, value: str) -> dict[str, Any]:
        return {"header_filter": {"header": {"name": name, "string_match": {"exact": value}}}}

    def plain(code: int) -> dict[str, Any]:
        return fmt(escape_format(pages.plain_page(code)))

    mappers: list[dict[str, Any]] = [
        {   # `OPTIONS *` asks about the server itself: no route covers `*`; answer 200, no body
            "filter": {"and_filter": {"filters": [header(":method", "OPTIONS"), header(":path", "*")]}},
            "status_code": 200,
            "body": {"inline_string": ""},
        },
        {   # no route takes CONNECT (Envoy answers 404 or 403 itself): gotunnel is no forward proxy, 405
            "filter": header(":method", "CONNECT"),
            "status_code": 405,
            "body_format_override": plain(405),
        },
        {   # no route at all: the plain page, never one built from missing metadata
            "filter": flags("NR"), "status_code": 404, "body_format_override": plain(404),
        },
    ]
    if lan:
        for lan_flags, code in ((("UH",), 503), (("UT",), 504), (("UF", "URX", "UC", "UR", "UPE", "DPE"), 502)):
            mappers.append({"filter": flags(*lan_flags), "status_code": code, "body_format_override": plain(code)})
        mappers.append({"filter": status(404), "body_format_override": plain(404)})
        return {"mappers": mappers}
    mappers += [
        {   # every backend unhealthy (active checks or outlier ejection): 503 listing them
            "filter": flags("UH"),
            "status_code": 503,
            "body_format_override": fmt(meta("unavailable")),
        },
        {   # nothing from the backend within the upstream timeout
            "filter": flags("UT"),
            "status_code": 504,
            "body_format_override": fmt(meta("timeout")),
        },
    ]
    for names, reason in _BAD_GATEWAY_REASONS:
        mappers.append({
            "filter": flags(*names),
            "status_code": 502,
            "body_format_override": fmt(
                meta("bg_head") + f"%UPSTREAM_METADATA({NS}:url)%" + meta("bg_mid") + escape_format(reason) + meta("bg_tail")
            ),
        })
    mappers += [
        {   # the catch-all route's 404, echoing a Host that cannot carry markup
            "filter": {"and_filter": {"filters": [
                status(404),
                {"header_filter": {"header": {"name": ":authority", "string_match": {"safe_regex": {"regex": SAFE_HOST_RE}}}}},
            ]}},
            "body_format_override": fmt(meta("nf_head") + "%REQ(:AUTHORITY)%" + meta("nf_tail")),
        },
        {
            "filter": status(404),
            "body_format_override": fmt(meta("nf_invalid")),
        },
    ]
    return {"mappers": mappers}


# ----- routes ------------------------------------------------------------------------------------------

def _header_adds(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    return [
        {"header": {"key": name, "value": escape_format(value)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
         "keep_empty_value": True}
        for name, value in pairs
    ]


def _check_header_rules(tunnel: Tunnel) -> None:
    for direction, ops in (("request", tunnel.headers.request), ("response", tunnel.headers.response)):
        for name in [n for n, _ in ops.add] + list(ops.remove):
            if name.lower() in RESTRICTED_HEADERS:
                raise ValidationError(
                    f"headers.{direction}", name,
                    f"tunnel {tunnel.name!r}: the envoy engine cannot set or remove {name!r} with header rules "
                    "(set host_header instead)",
                )


def _path_prefix(tunnel: Tunnel) -> str:
    """The tunnel's backend path prefix; Envoy rewrites paths per route, so all backends share it."""
    prefixes = {b.path for b in tunnel.backends}
    if len(prefixes) > 1:
        raise ValidationError(
            "backends", [b.url for b in tunnel.backends],
            f"tunnel {tunnel.name!r}: the envoy engine needs one path prefix for all backends of a tunnel",
        )
    return prefixes.pop()


def _forward_route(tunnel: Tunnel, options: EnvoyOptions | None = None, upstream_timeout: float = 60.0) -> dict[str, Any]:
    req, resp = tunnel.headers.request, tunnel.headers.response
    action: dict[str, Any] = {
        "cluster": cluster_name(tunnel),
        "timeout": "0s",  # no response deadline: SSE and long polls stream for as long as they like
        # ... but the backend must send something within upstream_timeout (504 otherwise): Envoy
        # measures it from the request sent to the next byte received, so it also applies between
        # two bytes of a response, as nginx's proxy_read_timeout does.
        "retry_policy": {"per_try_idle_timeout": _seconds(upstream_timeout)},
    }
    if options is not None and tunnel.name in options.upstream_hosts:
        action["host_rewrite_literal"] = options.upstream_hosts[tunnel.name]
    prefix = _path_prefix(tunnel)
    if prefix:
        action["prefix_rewrite"] = prefix + "/"
    if tunnel.host_header == "backend":
        action["auto_host_rewrite"] = True  # each endpoint's `hostname` is its host:port
    elif tunnel.host_header != "preserve":
        action["host_rewrite_literal"] = tunnel.host_header
    if len(tunnel.backends) > 1:
        # Like the builtin engine: a refused connection is retried on another backend.
        action["retry_policy"] = {
            **action["retry_policy"],
            "retry_on": "connect-failure",
            "num_retries": min(len(tunnel.backends) - 1, 5),
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                      "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}],
            "host_selection_retry_max_attempts": 5,
        }
    route: dict[str, Any] = {
        "name": tunnel.name,
        "match": {"prefix": "/"},
        "route": action,
        "metadata": {"filter_metadata": {NS: _tunnel_metadata(tunnel, upstream_timeout)}},
        "request_headers_to_add": [
            {"header": {"key": "X-Forwarded-Host", "value": "%REQ(:AUTHORITY)%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            *_header_adds(req.add),
        ],
    }
    remove = list(req.remove)
    if _scheme(tunnel) == "http" and "te" not in {name.lower() for name in remove}:
        remove.append("te")  # hop-by-hop towards HTTP/1.1; gRPC over HTTP/2 needs its `te: trailers`
    if remove:
        route["request_headers_to_remove"] = remove
    if resp.add:
        route["response_headers_to_add"] = _header_adds(resp.add)
    if resp.remove:
        route["response_headers_to_remove"] = list(resp.remove)
    return route


def _websocket_routes(tunnel: Tunnel, main: dict[str, Any]) -> list[dict[str, Any]]:
    """Routes for websocket upgrades, tried before `main` (whose action and headers they copy).

    One for upgrades without a Sec-WebSocket-Key, i.e. RFC 8441 websockets from HTTP/2 clients
    (see RFC8441_WEBSOCKET_KEY); and for an https tunnel one sending every websocket to the
    HTTP/1.1-only twin cluster, since a backend that negotiated h2 would get an extended CONNECT.
    """
    upgrade = {"name": "upgrade", "string_match": {"exact": "websocket", "ignore_case": True}}
    no_key = {"name": "sec-websocket-key", "present_match": True, "invert_match": True}
    routes: list[dict[str, Any]] = []
    for extra, add_key in (([upgrade, no_key], True), ([upgrade], False)):
        if not add_key and _scheme(tunnel) != "https":
            continue
        route = json.loads(json.dumps(main))  # a deep copy
        route["name"] = f"{tunnel.name} websocket" + (" (RFC 8441)" if add_key else "")
        route["match"]["headers"] = route["match"].get("headers", []) + extra
        route["route"]["cluster"] = websocket_cluster_name(tunnel)
        if add_key:
            route["request_headers_to_add"] = route.get("request_headers_to_add", []) + [
                {"header": {"key": "Sec-WebSocket-Key", "value": RFC8441_WEBSOCKET_KEY}, "append_action": "ADD_IF_ABSENT"},
                {"header": {"key": "Sec-WebSocket-Version", "value": "13"}, "append_action": "ADD_IF_ABSENT"},
            ]
            # The backend's answer to that key means nothing to the HTTP/2 client.
            route["response_headers_to_remove"] = route.get("response_headers_to_remove", []) + ["Sec-WebSocket-Accept"]
        routes.append(route)
    return routes


def _one_label_match(tunnel: Tunnel, names: tuple[str, ...] = NAME_SUFFIXES) -> dict[str, Any]:
    """Envoy's `*.x.localhost` also matches `a.b.x.localhost`; gotunnel's wildcard is one label."""
    base = _re2_literal(tunnel.name[2:])
    suffixes = "|".join(_re2_literal(s) for s in names)
    regex = rf"(?i)^[^.:\[\]]+\.{base}\.(?:{suffixes})\.?(?::[0-9]+)?$"
    return {"name": ":authority", "string_match": {"safe_regex": {"regex": regex}}}


def _not_found_route(meta: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "not_found",
        "match": {"prefix": "/"},
        # The local-reply mappers replace this body with the page (from the metadata below): a
        # direct response body is capped at 4 KiB, the page listing a thousand tunnels is not.
        "direct_response": {"status": 404, "body": {"inline_string": "404: no tunnel for this host\n"}},
        "response_headers_to_add": [{"header": {"key": "Content-Type", "value": HTML},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "metadata": {"filter_metadata": {NS: meta}},
    }


def _guard_routes(tunnel: Tunnel, table: RouteTable, lan: bool) -> list[dict[str, Any]]:
    """What a tunnel refuses before proxying: a dot segment in the path (400) and a request
    carrying this gotunnel's loop marker (508: the detailed page on the loopback side)."""
    loop = {"name": HOP_HEADER.lower(), "string_match": {"exact": table.hop_id}}
    loop_page = _plain(508) if lan else {"status": 508, "body": {"inline_string": pages.loop_page(tunnel.name)}}
    return [
        _html({"name": "dot_segment", "match": {"safe_regex": {"regex": dotsegments.PATH_REGEX}},
               "direct_response": _plain(400)}),
        _html({"name": "loop", "match": {"prefix": "/", "headers": [loop]}, "direct_response": loop_page}),
    ]


def _tunnel_vhost(tunnel: Tunnel, table: RouteTable, plain_http: bool, nf_meta: dict[str, str],
                  options: EnvoyOptions | None = None, lan: bool = False) -> dict[str, Any]:
    suffixes = options.suffixes if options is not None else NAME_SUFFIXES
    if plain_http and tunnel.redirect_https:
        code = {307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}[tunnel.redirect_code]
        redirect: dict[str, Any] = {"https_redirect": True, "response_code": code}
        if table.listen.https_port != 443:
            redirect["port_redirect"] = table.listen.https_port
        main: dict[str, Any] = {"name": tunnel.name, "match": {"prefix": "/"}, "redirect": redirect}
    else:
        main = _forward_route(tunnel, options, table.timeout_of(tunnel))
    if tunnel.is_wildcard:
        main["match"]["headers"] = [_one_label_match(tunnel, suffixes)]
    routes = _guard_routes(tunnel, table, lan)
    routes += [main] if "redirect" in main else [*_websocket_routes(tunnel, main), main]
    if tunnel.is_wildcard:
        routes.append(_not_found_route(nf_meta))
    domains = _domains(tunnel, suffixes)
    if lan:  # `.localhost` names answer loopback peers only
        domains = [d for d in domains if not d.rstrip(".").endswith(".localhost")]
    return {"name": f"tunnel_{_slug(tunnel.name)}", "domains": domains, "routes": routes}


def route_config_headers(hop_id: str | None = None) -> dict[str, Any]:
    """What every route configuration does to requests: Host ports ignored in matching, and
    X-Forwarded-For as the other engines write it: the client's list, then ", " and the peer
    (Envoy's own append writes the machine's address for loopback peers, without a space); with
    `hop_id`, this gotunnel's loop marker (gotunnel_core.loops) on every request upstream."""
    added: list[dict[str, Any]] = [
        {"header": {"key": "X-Forwarded-For", "value": "%REQ(X-Forwarded-For)%, %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
         "append_action": "OVERWRITE_IF_EXISTS"},
        {"header": {"key": "X-Forwarded-For", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
         "append_action": "ADD_IF_ABSENT"},
    ]
    if hop_id is not None:
        added.append({"header": {"key": HOP_HEADER, "value": escape_format(hop_id)},
                      "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    return {
        "ignore_port_in_host_matching": True,
        "request_headers_to_add": added,
        "request_headers_to_remove": ["x-envoy-external-address", "x-envoy-internal"],
    }


def route_config(name: str, table: RouteTable, served: tuple[Tunnel, ...], *, plain_http: bool,
                 options: EnvoyOptions | None = None, lan: bool = False) -> dict[str, Any]:
    """One RouteConfiguration: a virtual host per served tunnel, then the 404 catch-all. The LAN
    side (`lan`) serves only tunnels open to the LAN and carries no tunnel listing."""
    listed = table.tunnels if options is None or options.list_tunnels_on_404 else ()
    nf_meta = {} if lan else _not_found_metadata(table, listed)
    if lan:
        served = tuple(t for t in served if t.lan)
    vhosts = [_tunnel_vhost(t, table, plain_http, nf_meta, options, lan) for t in served]
    vhosts.append({"name": "not_found", "domains": ["*"], "routes": [_not_found_route(nf_meta)]})
    return {
        "@type": ROUTE_CONFIG_TYPE,
        "name": name,
        "virtual_hosts": vhosts,
        **route_config_headers(table.hop_id),
        # RDS and CDS files are re-read independently: a route may briefly name a cluster that
        # is not loaded yet (the engine waits for both before reporting the change applied).
        "validate_clusters": False,
    }


# ----- listeners -------------------------------------------------------------------------------------

def _preserve_case() -> dict[str, Any]:
    return {"stateful_formatter": {
        "name": "preserve_case",
        "typed_config": {"@type": PRESERVE_CASE_TYPE, "formatter_type_on_envoy_headers": "PROPER_CASE"},
    }}


def _path_source(options: EnvoyOptions, rel: str) -> dict[str, Any]:
    """Where a subscription reads its resources: a watched file, or the ADS stream (team edge)."""
    if options.ads:
        return ADS_SOURCE
    return {
        "path_config_source": {
            "path": str(options.config_dir / rel),
            "watched_directory": {"path": str(options.work_dir)},
        },
        "resource_api_version": "V3",
    }


def _routes_source(options: EnvoyOptions, stat_prefix: str, rds_name: str) -> dict[str, Any]:
    """Where a connection manager's routes come from: one RDS resource, or (HTTPS on a team
    edge) one per name, picked by the Host's leading labels through scoped routes."""
    if options.scoped_routes is not None and stat_prefix == "https":
        name, labels = options.scoped_routes
        return {"scoped_routes": {
            "name": name,
            "scope_key_builder": {"fragments": [
                {"header_value_extractor": {"name": ":authority", "element_separator": ".", "index": index}}
                for index in range(labels)]},
            "rds_config_source": _path_source(options, "rds"),
            "scoped_rds": {"scoped_rds_config_source": _path_source(options, "srds")},
        }}
    return {"rds": {"route_config_name": rds_name, "config_source": _path_source(options, f"rds/{rds_name}.json")}}


def _hcm(options: EnvoyOptions, stat_prefix: str, rds_name: str, lan: bool = False, *,
         tls: bool = False) -> dict[str, Any]:
    # With `http2` off, a TLS connection speaks HTTP/1.1 only (ALPN offers nothing else either).
    http1_only = tls and not options.http2
    config: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "HTTP1" if http1_only else "AUTO",
        "use_remote_address": True,  # the peer is the client: X-Forwarded-Proto from the connection
        "skip_xff_append": True,  # the route configuration appends the peer itself
        # No client is "internal" (Envoy's default trusts loopback and private LANs): Envoy then
        # drops control headers such as x-envoy-retry-on or x-envoy-upstream-rq-timeout-ms sent
        # by a client, which would otherwise let anyone on the LAN make Envoy retry a POST.
        "internal_address_config": {"cidr_ranges": [{"address_prefix": "0.0.0.0", "prefix_len": 32},
                                                    {"address_prefix": "::", "prefix_len": 128}]},
        "generate_request_id": False,
        "server_header_transformation": "PASS_THROUGH",
        "stream_idle_timeout": _seconds(options.idle_timeout),
        "request_timeout": "0s",  # streaming bodies take as long as they take
        "request_headers_timeout": _seconds(options.header_timeout),  # absolute deadline for a head
        "max_request_headers_kb": max(1, min(8192, math.ceil(options.max_header_size / 1024))),
        "common_http_protocol_options": {"idle_timeout": _seconds(options.idle_timeout),
                                         "headers_with_underscores_action": "ALLOW"},
        "http_protocol_options": {"accept_http_10": True, "header_key_format": _preserve_case()},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        **_routes_source(options, stat_prefix, rds_name),
        "local_reply_config": local_reply_config(lan),
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER_TYPE, "suppress_envoy_headers": True}}],
    }
    if not http1_only:
        # Websockets over HTTP/2 (RFC 8441), bridged to HTTP/1.1 upgrades (see _websocket_routes).
        config["http2_protocol_options"] = {"allow_connect": True}
    if options.via:
        config["via"] = "1.1 gotunnel"
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


#: The config source of a resource delivered on the ADS stream (LDS/CDS in the team bootstrap,
#: RDS and SDS inside them).
ADS_SOURCE: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}


def _downstream_tls(cert: CertFiles, http2: bool) -> dict[str, Any]:
    return _downstream_tls_context({"tls_certificates": [{"certificate_chain": {"filename": cert.cert},
                                                          "private_key": {"filename": cert.key}}]}, http2)


def sds_downstream_tls(*secret_names: str, http2: bool = True) -> dict[str, Any]:
    """A TLS transport socket whose certificates are SDS secrets (on the ADS stream), picked by
    SNI among them: Envoy swaps a rotated certificate in place, without touching the listener."""
    return _downstream_tls_context({"tls_certificate_sds_secret_configs": [
        {"name": name, "sds_config": ADS_SOURCE} for name in secret_names]}, http2)


def _downstream_tls_context(certificates: dict[str, Any], http2: bool) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "common_tls_context": {**certificates, "alpn_protocols": ["h2", "http/1.1"] if http2 else ["http/1.1"]},
        },
    }


def _address(bind: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": bind, "port_value": port}}


def _tls_tunnels(table: RouteTable) -> tuple[Tunnel, ...]:
    return tuple(t for t in table.tunnels if t.https and t.name in table.certs)


def _chain_metadata(cert: CertFiles, digests: Mapping[str, str]) -> dict[str, Any]:
    """The certificate's content digest: a renewed certificate (same file names, new content)
    changes the filter chain, so Envoy loads it (Envoy does not watch certificate files)."""
    return {"filter_metadata": {NS: {"cert": digests.get(cert.cert, ""), "key": digests.get(cert.key, "")}}}


def _loopback_match() -> dict[str, Any]:
    """A filter chain match for connections from a loopback address (the peer's own, never a header)."""
    return {"direct_source_prefix_ranges": _loopback_ranges()}


def http_listener(listen: Listen, options: EnvoyOptions, rds_name: str = "http",
                  lan_rds_name: str | None = None) -> dict[str, Any]:
    """The plain HTTP listener: one connection manager on the route configuration `rds_name`;
    with `lan_rds_name`, that one for loopback peers only and `lan_rds_name` for LAN peers."""
    chains: list[dict[str, Any]]
    if lan_rds_name is None:
        chains = [{"name": "http", "filters": [_hcm(options, "http", rds_name)]}]
    else:
        chains = [
            {"name": "http", "filter_chain_match": _loopback_match(), "filters": [_hcm(options, "http", rds_name)]},
            {"name": "http" + LAN_SUFFIX, "filters": [_hcm(options, "http", lan_rds_name, lan=True)]},
        ]
    return {
        "@type": LISTENER_TYPE,
        "name": f"http_{listen.bind}_{listen.http_port}",
        "address": _address(listen.bind, listen.http_port),
        # Envoy binds with SO_REUSEPORT by default: a stale proxy on the same port would then
        # silently share the connections. Without it, a taken port fails the start loudly.
        "enable_reuse_port": False,
        "filter_chains": chains,
    }


def tls_chain(name: str, server_names: list[str], transport_socket: dict[str, Any], options: EnvoyOptions,
              rds_name: str, metadata: dict[str, Any] | None = None, *, peers: str = "any") -> dict[str, Any]:
    """One HTTPS filter chain: picked by SNI (any SNI when `server_names` is empty), terminating
    TLS, then routing by `rds_name` (or by scoped routes, see `EnvoyOptions.scoped_routes`).
    `peers`: "any"; "loopback" (matched for loopback peers only); "lan" (LAN peers' pages)."""
    chain: dict[str, Any] = {
        "name": name,
        "transport_socket": transport_socket,
        "filters": [_hcm(options, "https", rds_name, lan=peers == "lan", tls=True)],
    }
    match: dict[str, Any] = {"server_names": server_names} if server_names else {}
    if peers == "loopback":
        match.update(_loopback_match())
    if match:
        chain["filter_chain_match"] = match
    if metadata is not None:
        chain["metadata"] = metadata
    return chain


def listeners(table: RouteTable, options: EnvoyOptions, digests: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The HTTP listener and the HTTPS listener (one filter chain per TLS tunnel, by SNI), each
    split by the peer: loopback peers get the full route configurations, LAN peers the `_lan`
    ones (see LAN_SUFFIX)."""
    digests = digests or {}
    listen = table.listen
    out: list[dict[str, Any]] = [http_listener(listen, options, "http", "http" + LAN_SUFFIX)]
    chains: list[dict[str, Any]] = []
    for t in _tls_tunnels(table):
        for lan in ((False, True) if t.lan else (False,)):
            suffix = LAN_SUFFIX if lan else ""
            chains.append(tls_chain(f"tls_{_slug(t.name)}" + suffix, _server_names(t, options.suffixes),
                                    _downstream_tls(table.certs[t.name], options.http2), options, "tls" + suffix,
                                    _chain_metadata(table.certs[t.name], digests),
                                    peers="lan" if lan else "loopback"))
    default_chain = None
    if table.default_cert is not None:
        # Loopback peers without a tunnel's SNI get the full 404 page; everyone else the LAN side's.
        default_tls = _downstream_tls(table.default_cert, options.http2)
        chains.append(tls_chain("tls_default", [], default_tls, options, "tls",
                                _chain_metadata(table.default_cert, digests), peers="loopback"))
        default_chain = tls_chain("tls_default" + LAN_SUFFIX, [], default_tls, options,
                                  "tls" + LAN_SUFFIX, _chain_metadata(table.default_cert, digests), peers="lan")
    out.append(https_listener(listen, chains, default_chain))
    return out


def https_listener(listen: Listen, chains: list[dict[str, Any]], default_chain: dict[str, Any] | None) -> dict[str, Any]:
    """The HTTPS listener: `chains` by SNI, else `default_chain` (or, with neither, a closed port)."""
    https: dict[str, Any] = {
        "@type": LISTENER_TYPE,
        "name": f"https_{listen.bind}_{listen.https_port}",
        "address": _address(listen.bind, listen.https_port),
        "enable_reuse_port": False,
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                              "typed_config": {"@type": TLS_INSPECTOR_TYPE}}],
        "filter_chains": chains,
    }
    if default_chain is not None:
        https["default_filter_chain"] = default_chain
    elif not chains:
        # Nothing to serve over TLS yet: still hold the port (as every engine does) and close
        # each connection at once.
        https["default_filter_chain"] = {
            "name": "closed",
            "filters": [{"name": "envoy.filters.network.direct_response",
                         "typed_config": {"@type": DIRECT_RESPONSE_TYPE}}],
        }
    return https


def route_configs(table: RouteTable, options: EnvoyOptions | None = None) -> dict[str, dict[str, Any]]:
    """Every RouteConfiguration by name (one file each: an RDS file holds exactly one).

    `http` serves every tunnel; `tls` is shared by every TLS filter chain (each tunnel's and the
    default one), so the config grows linearly with the tunnels and the 404 page exists once per
    file. The price: on a tunnel's TLS connection a Host naming another TLS tunnel is served
    where the builtin engine answers 421. Each has a `_lan` twin for LAN peers.
    """
    configs: dict[str, dict[str, Any]] = {}
    for lan in (False, True):
        suffix = LAN_SUFFIX if lan else ""
        configs["http" + suffix] = route_config("http" + suffix, table, table.tunnels, plain_http=True,
                                                options=options, lan=lan)
        if _tls_tunnels(table) or table.default_cert is not None:
            configs["tls" + suffix] = route_config("tls" + suffix, table, _tls_tunnels(table), plain_http=False,
                                                   options=options, lan=lan)
    return configs


# ----- clusters ---------------------------------------------------------------------------------------

def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _endpoint(backend: Backend) -> dict[str, Any]:
    from html import escape

    return {
        "endpoint": {
            "address": _address(backend.host, backend.port),
            "hostname": backend.address,
            "health_check_config": {"hostname": backend.address},
        },
        "load_balancing_weight": backend.weight,
        # Shown on the 502 page through %UPSTREAM_METADATA(gotunnel:url)%: HTML-escaped here.
        "metadata": {"filter_metadata": {NS: {"url": escape(backend.url)}}},
    }


def _scheme(tunnel: Tunnel) -> str:
    """The one scheme of a tunnel's backends (http, https or h2c)."""
    schemes = {b.scheme for b in tunnel.backends}
    if len(schemes) > 1:
        raise ValidationError("backends", [b.url for b in tunnel.backends],
                              f"tunnel {tunnel.name!r}: the envoy engine needs one scheme for all backends of a tunnel")
    return schemes.pop()


def _upstream_protocol(scheme: str, options: EnvoyOptions, *, http1_only: bool = False) -> dict[str, Any]:
    """HttpProtocolOptions: HTTP/1.1 to http backends; HTTP/2 with prior knowledge to h2c ones; to
    https ones whatever ALPN picks (Envoy offers h2 and http/1.1), unless `http1_only`."""
    http1 = {"header_key_format": _preserve_case()}
    if scheme == "h2c":
        config: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": {}}}
    elif scheme == "https" and not http1_only:
        config = {"auto_config": {"http_protocol_options": http1, "http2_protocol_options": {}}}
    else:
        config = {"explicit_http_config": {"http_protocol_options": http1}}
    return {"@type": UPSTREAM_HTTP_TYPE,
            "common_http_protocol_options": {"idle_timeout": _seconds(options.upstream_idle_timeout)}, **config}


def clusters(tunnel: Tunnel, options: EnvoyOptions) -> list[dict[str, Any]]:
    """A tunnel's cluster and, for https backends, an HTTP/1.1-only twin for websockets (which
    would otherwise go out as an extended CONNECT to a backend that negotiated h2)."""
    main = cluster(tunnel, options)
    if _scheme(tunnel) != "https":
        return [main]
    twin = json.loads(json.dumps(main))  # a deep copy
    twin["name"] = twin["load_assignment"]["cluster_name"] = websocket_cluster_name(tunnel)
    twin["typed_extension_protocol_options"][UPSTREAM_HTTP_KEY] = _upstream_protocol("https", options, http1_only=True)
    return [main, twin]


def cluster(tunnel: Tunnel, options: EnvoyOptions) -> dict[str, Any]:
    """One cluster per tunnel: weighted round robin over its backends."""
    backends = tunnel.backends
    scheme = _scheme(tunnel)
    thresholds = {"max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
                  "max_requests": UNLIMITED, "max_retries": UNLIMITED}
    out: dict[str, Any] = {
        "@type": CLUSTER_TYPE,
        "name": cluster_name(tunnel),
        "type": "STATIC" if all(_is_ip(b.host) for b in backends) else "STRICT_DNS",
        "connect_timeout": "5s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": cluster_name(tunnel),
                            "endpoints": [{"lb_endpoints": [_endpoint(b) for b in backends]}]},
        "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", **thresholds}, {"priority": "HIGH", **thresholds}]},
        # No panic routing: with every backend unhealthy, answer 503 (like the other engines)
        # instead of sending traffic to backends known to be down.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "typed_extension_protocol_options": {UPSTREAM_HTTP_KEY: _upstream_protocol(scheme, options)},
    }
    if out["type"] == "STRICT_DNS":
        out["dns_lookup_family"] = "V4_PREFERRED"
    if scheme == "https":
        tls: dict[str, Any] = {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": {}}
        hosts = {b.host for b in backends}
        if len(hosts) == 1 and not _is_ip(next(iter(hosts))):
            tls["sni"] = next(iter(hosts))
        # Like the builtin engine: local dev backends have self-signed certificates; not verified.
        out["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    check = tunnel.health
    if check is not None:
        out["health_checks"] = [{
            "timeout": _seconds(check.timeout),
            "interval": _seconds(check.interval),
            "no_traffic_interval": _seconds(check.interval),
            "unhealthy_interval": _seconds(check.interval),
            "healthy_threshold": check.healthy_threshold,
            "unhealthy_threshold": check.unhealthy_threshold,
            "reuse_connection": False,  # a fresh connection per check, as the builtin engine does
            "http_health_check": {
                "path": _path_prefix(tunnel) + check.path,
                **({"codec_client_type": "HTTP2"} if scheme == "h2c" else {}),
                "expected_statuses": [{"start": 200, "end": 400}],
                "request_headers_to_add": [{"header": {"key": "User-Agent", "value": "gotunnel-health"},
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            },
        }]
    if len(backends) > 1 or check is not None:
        # Passive ejection of a backend that refuses connections (a lone backend without a
        # check stays: its clients get the 502 page naming it).
        eject = check.interval * check.healthy_threshold if check else 10.0
        out["outlier_detection"] = {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "consecutive_5xx": UNLIMITED,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": _seconds(eject),
            "max_ejection_time": _seconds(eject),
            "max_ejection_percent": 100,
        }
    return out


# ----- documents -----------------------------------------------------------------------------------------

def _discovery(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A DiscoveryResponse file. Its version is a hash of its resources, so the engine can tell
    from Envoy's stats (`version_text`) when exactly this content is live (and an unchanged file keeps its
    version: Envoy ignores a route configuration whose content did not change)."""
    import hashlib

    digest = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]
    return {"version_info": digest, "resources": resources}


def bootstrap(options: EnvoyOptions) -> dict[str, Any]:
    """The static part: node, admin (unix socket, or loopback port 0), dynamic_resources."""
    if options.admin_socket:
        admin_address: dict[str, Any] = {"pipe": {"path": options.admin_socket, "mode": 0o600}}
    else:
        admin_address = _address("127.0.0.1", 0)
    return {
        "node": {"id": "gotunnel", "cluster": "gotunnel"},
        "admin": {"address": admin_address},
        "dynamic_resources": {
            "lds_config": _path_source(options, "lds.json"),
            "cds_config": _path_source(options, "cds.json"),
        },
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {"@type": DOWNSTREAM_CONN_MONITOR_TYPE,
                                 "max_active_downstream_connections": options.max_connections},
            }],
        },
    }


def render_documents(table: RouteTable, options: EnvoyOptions,
                     digests: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every config document as a dict, by relative file name."""
    for tunnel in table.tunnels:
        _check_header_rules(tunnel)
        _path_prefix(tunnel)
    docs: dict[str, dict[str, Any]] = {
        "bootstrap.json": bootstrap(options),
        "lds.json": _discovery(listeners(table, options, digests)),
        "cds.json": _discovery([c for t in table.tunnels for c in clusters(t, options)]),
    }
    for name, config in route_configs(table, options).items():
        docs[f"rds/{name}.json"] = _discovery([config])
    return docs


#: Documents larger than this (compact) are written compact: indenting goes through Python's
#: slow pure-Python encoder, and a thousand tunnels make megabytes. Smaller ones stay readable.
PRETTY_LIMIT = 256 * 1024


def dumps(doc: Mapping[str, Any]) -> str:
    compact = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    if len(compact) <= PRETTY_LIMIT:
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return compact + "\n"


def render_files(table: RouteTable, options: EnvoyOptions, digests: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every config file, by relative name (bootstrap, LDS, CDS, RDS; see the module docstring).

    `digests` maps certificate/key paths to a digest of their content (see `cert_digests`).
    """
    return {name: dumps(doc) for name, doc in render_documents(table, options, digests).items()}


def cert_digests(table: RouteTable) -> dict[str, str]:
    """sha256 (16 hex digits) of every certificate and key file the table names; "" when unreadable."""
    import hashlib

    paths = {p for c in [*table.certs.values(), *([table.default_cert] if table.default_cert else [])]
             for p in (c.cert, c.key)}
    out: dict[str, str] = {}
    for path in sorted(paths):
        try:
            out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        except OSError:
            out[path] = ""
    return out


def static_bootstrap(table: RouteTable, options: EnvoyOptions,
                     docs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The same config with listeners, clusters and routes inlined, for `envoy --mode validate`.

    `docs` are the already rendered documents of `table` (rendered here when not given).
    """
    docs = render_documents(table, options) if docs is None else docs
    boot = bootstrap(options)
    boot.pop("dynamic_resources")
    boot.pop("admin")  # validation binds nothing
    configs = {doc["resources"][0]["name"]: doc["resources"][0] for name, doc in docs.items() if name.startswith("rds/")}
    static_listeners = json.loads(json.dumps(docs["lds.json"]["resources"]))  # a deep copy to edit
    inlined: set[str] = set()
    for listener in static_listeners:
        chains = list(listener.get("filter_chains", []))
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        for chain in chains:
            for flt in chain["filters"]:
                hcm = flt["typed_config"]
                if "rds" not in hcm:
                    continue
                name = hcm.pop("rds")["route_config_name"]
                if name in inlined:  # checked once: every chain shares it (keeps this file linear)
                    hcm["route_config"] = {"name": name}
                    continue
                inlined.add(name)
                hcm["route_config"] = {k: v for k, v in configs[name].items() if k != "@type"}
        listener.pop("@type")
    clusters = [{k: v for k, v in c.items() if k != "@type"} for c in docs["cds.json"]["resources"]]
    boot["static_resources"] = {"listeners": static_listeners, "clusters": clusters}
    return boot
