"""xDS resource files for an Envoy gotunnel does not run (`render --for existing`, `sync`).

The output is two DiscoveryResponse files for an Envoy whose bootstrap reads them through
`path_config_source` (with `watched_directory` on their directory): `cds.json`, one cluster per
tunnel, and `lds.json`, gotunnel's HTTP and HTTPS listeners with their routes inline (one
virtual host per tunnel, its real names as domains, the user's certificate on an SNI-matched
filter chain). Every resource is named `gotunnel_...`, so it sits beside the host's own. The
builders are the engine's own (`render.py`): clusters, forwarding routes, connection managers
and TLS contexts come out the same; gotunnel's pages (local replies) are left out.

`merged_static_bootstrap` is the host's bootstrap with these resources inlined as static ones,
which `envoy --mode validate` checks before the files are moved into the watched place.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from gotunnel_core.engine import EngineValidationError
from gotunnel_core.existing import ExistingSite, ExistingTable
from gotunnel_core.models import CertFiles, Listen

from .render import (LISTENER_TYPE, TLS_INSPECTOR_TYPE, EnvoyOptions, _address, _discovery, _downstream_tls,
                     _forward_route, _hcm, _re2_literal, _websocket_routes, cluster, dumps, route_config_headers)

PREFIX = "gotunnel_"


def _cluster_name(site: ExistingSite) -> str:
    return PREFIX + site.slug


def _domains(site: ExistingSite) -> list[str]:
    return [name for host in site.hosts for name in (host, host + ".")]


def _one_label_match(site: ExistingSite) -> dict[str, Any]:
    """Envoy's `*.x` domain also matches `a.b.x`; a gotunnel wildcard is one label, as elsewhere."""
    parts = [r"[^.:\[\]]+\." + _re2_literal(h[2:]) if h.startswith("*.") else _re2_literal(h) for h in site.hosts]
    return {"name": ":authority",
            "string_match": {"safe_regex": {"regex": rf"(?i)^(?:{'|'.join(parts)})\.?(?::[0-9]+)?$"}}}


def _vhost(site: ExistingSite, listen: Listen, plain_http: bool) -> dict[str, Any]:
    tunnel = site.tunnel
    if plain_http and tunnel.redirect_https and site.tls.mode == "files":
        redirect: dict[str, Any] = {"https_redirect": True, "response_code": "PERMANENT_REDIRECT"}
        if listen.https_port != 443:
            redirect["port_redirect"] = listen.https_port
        main: dict[str, Any] = {"name": PREFIX + site.slug, "match": {"prefix": "/"}, "redirect": redirect}
    else:
        main = _forward_route(tunnel)
        main["name"] = PREFIX + site.slug
        main["route"]["cluster"] = _cluster_name(site)
        main.pop("metadata", None)  # gotunnel's pages: not in a proxy gotunnel does not run
    wildcard = any(h.startswith("*.") for h in site.hosts)
    if wildcard:
        main["match"]["headers"] = [_one_label_match(site)]
    # Websocket upgrades (HTTP/1.1 and RFC 8441 over HTTP/2) first, as in the engine's own routes.
    routes = [main] if "redirect" in main else [*_websocket_routes(tunnel, main), main]
    if wildcard:
        routes.append({"name": PREFIX + "not_found", "match": {"prefix": "/"},
                       "direct_response": {"status": 404, "body": {"inline_string": "404: no route for this host\n"}}})
    return {"name": PREFIX + site.slug, "domains": _domains(site), "routes": routes}


def _manager(options: EnvoyOptions, stat_prefix: str, name: str, vhosts: list[dict[str, Any]],
             tls: bool = False) -> dict[str, Any]:
    """The engine's connection manager with the routes inline and without gotunnel's pages."""
    hcm = _hcm(options, stat_prefix, name, tls=tls)
    config = hcm["typed_config"]
    config.pop("rds", None)
    config.pop("local_reply_config", None)
    config["route_config"] = {"name": name, "virtual_hosts": vhosts, **route_config_headers(),
                              "validate_clusters": False}
    return hcm


def build_resources(table: ExistingTable, options: EnvoyOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listeners, clusters) for `table`."""
    sites = sorted(table.sites, key=lambda s: (s.tunnel.is_wildcard, s.tunnel.name))
    clusters = []
    for site in sites:
        if site.tls.mode == "acme":
            raise EngineValidationError(f"envoy: tunnel {site.tunnel.name!r} has tls = \"acme\", but Envoy does not get "
                                        "certificates itself; give tls = {cert = PATH, key = PATH}, or use Caddy")
        found = cluster(site.tunnel, options)
        found["name"] = found["load_assignment"]["cluster_name"] = _cluster_name(site)
        clusters.append(found)
    listen = table.listen
    http_name = f"{PREFIX}http_{listen.http_port}"
    listeners = [{
        "@type": LISTENER_TYPE,
        "name": http_name,
        "address": _address(listen.bind, listen.http_port),
        "enable_reuse_port": False,
        "filter_chains": [{"name": http_name, "filters": [
            _manager(options, http_name, http_name, [_vhost(s, listen, True) for s in sites])]}],
    }]
    tls_sites = [s for s in sites if s.tls.mode == "files"]
    if tls_sites:
        https_name = f"{PREFIX}https_{listen.https_port}"
        manager = _manager(options, https_name, https_name, [_vhost(s, listen, False) for s in tls_sites], tls=True)
        listeners.append({
            "@type": LISTENER_TYPE,
            "name": https_name,
            "address": _address(listen.bind, listen.https_port),
            "enable_reuse_port": False,
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                                  "typed_config": {"@type": TLS_INSPECTOR_TYPE}}],
            # One chain per tunnel, by SNI (Envoy matches `*.x` server names as wildcards).
            "filter_chains": [{"name": PREFIX + s.slug, "filter_chain_match": {"server_names": list(s.hosts)},
                               "transport_socket": _downstream_tls(CertFiles(s.tls.cert, s.tls.key), options.http2),
                               "filters": [copy.deepcopy(manager)]} for s in tls_sites],
        })
    return listeners, clusters


def render_files(table: ExistingTable, options: EnvoyOptions) -> dict[str, str]:
    """`cds.json` then `lds.json` (the order `sync` moves them in: clusters before listeners)."""
    listeners, clusters = build_resources(table, options)
    return {"cds.json": dumps(_discovery(clusters)), "lds.json": dumps(_discovery(listeners))}


def _strip_type(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "@type"}


def merged_static_bootstrap(base: dict[str, Any], lds: dict[str, Any], cds: dict[str, Any]) -> dict[str, Any]:
    """The host's bootstrap with gotunnel's listeners and clusters inlined as static resources,
    its dynamic resources and admin left out (validation binds and fetches nothing)."""
    if not isinstance(base, dict):
        raise EngineValidationError("envoy: the main config is not a JSON object")
    boot = copy.deepcopy(base)
    boot.pop("dynamic_resources", None)
    boot.pop("admin", None)
    static = boot.setdefault("static_resources", {})
    static["listeners"] = [x for x in static.get("listeners", []) if not str(x.get("name", "")).startswith(PREFIX)]
    static["clusters"] = [c for c in static.get("clusters", []) if not str(c.get("name", "")).startswith(PREFIX)]
    static["listeners"] += [_strip_type(r) for r in lds.get("resources", [])]
    static["clusters"] += [_strip_type(r) for r in cds.get("resources", [])]
    return boot


def load_json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EngineValidationError(f"envoy: {what} is not JSON ({exc}); sync reads JSON bootstraps") from None
    if not isinstance(value, dict):
        raise EngineValidationError(f"envoy: {what} is not a JSON object")
    return value



__all__ = ["PREFIX", "build_resources", "merged_static_bootstrap", "render_files"]
