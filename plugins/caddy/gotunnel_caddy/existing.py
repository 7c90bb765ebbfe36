"""Config for a Caddy gotunnel does not run (`render --for existing`, `sync --engine caddy`).

The fragment is a Caddy JSON config holding only what gotunnel adds: one route per tunnel and
listener, each tagged `"@id": "gotunnel_<tunnel>_<http|https>"` so the admin API can address it
(`/id/gotunnel_api_https`), in servers `gotunnel_http`/`gotunnel_https`, and the user's
certificates under `tls.certificates.load_files` (tag `gotunnel_<tunnel>`), and, when the
`acme_*` settings name an ACME server, one automation policy (`"@id": "gotunnel_acme"`) that
points the `tls = "acme"` names at it. `merge` puts it into
the host's own config: routes go first into the host's server on the same port (replacing the
ones an earlier sync tagged), or the gotunnel servers are added when no server listens there.
The merged config is what `caddy validate` checks and what the admin API's `/load` receives.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from gotunnel_core.engine import EngineValidationError
from gotunnel_core.existing import ExistingSite, ExistingTable

from .render import HTTP_SERVER, HTTPS_SERVER, check_backends, check_config_path, listen_address, tunnel_routes

ID_PREFIX = "gotunnel_"
#: The `@id` of the automation policy for `tls = "acme"` names (route ids end in _http/_https).
ACME_POLICY_ID = f"{ID_PREFIX}acme"


def _route(site: ExistingSite, table: ExistingTable, https: bool) -> dict[str, Any]:
    return {
        "@id": f"{ID_PREFIX}{site.slug}_{'https' if https else 'http'}",
        "match": [{"host": list(site.hosts)}],
        "handle": [{"handler": "subroute", "routes": tunnel_routes(site.tunnel, table.listen, https=https,
                                                                   server_names=site.hosts)}],
        "terminal": True,
    }


def _acme_policy(table: ExistingTable) -> dict[str, Any] | None:
    """The automation policy sending the `tls = "acme"` names to the settings' ACME server (None:
    no such names, or no server set, so Caddy's default issuers apply)."""
    hosts, acme = table.acme_hosts, table.acme
    if not hosts or acme is None:
        return None
    issuer: dict[str, Any] = {"module": "acme"}
    if acme.ca:
        issuer["ca"] = acme.ca
    if acme.ca_root:
        issuer["trusted_roots_pem_files"] = [check_config_path(acme.ca_root, "acme_ca_root")]
    if acme.email:
        issuer["email"] = acme.email
    return {"@id": ACME_POLICY_ID, "subjects": sorted(hosts), "issuers": [issuer]}


def build_fragment(table: ExistingTable) -> dict[str, Any]:
    """gotunnel's part of a Caddy config for `table` (a loadable config on its own)."""
    http_routes, https_routes, files = [], [], []
    acme = False
    for site in sorted(table.sites, key=lambda s: (s.tunnel.is_wildcard, s.tunnel.name)):
        check_backends(site.tunnel)
        tls = site.tls.mode != "off"
        http_routes.append(_route(site, table, https=False))
        if tls:
            https_routes.append(_route(site, table, https=True))
        if site.tls.mode == "files":
            what = f"certificate of tunnel {site.tunnel.name!r}"
            files.append({"certificate": check_config_path(site.tls.cert, what),
                          "key": check_config_path(site.tls.key, what + " key"),
                          "format": "pem", "tags": [f"{ID_PREFIX}{site.slug}"]})
        acme = acme or site.tls.mode == "acme"
    listen = table.listen
    servers: dict[str, Any] = {HTTP_SERVER: {
        "listen": [listen_address(listen.bind, listen.http_port)],
        "routes": http_routes,
        # Never automatic HTTPS here: on a port other than Caddy's http_port it would turn this
        # plain-HTTP server into an HTTPS one for acme names. Caddy answers ACME HTTP challenges on
        # every server regardless; redirects are the routes' business (redirect_https).
        "automatic_https": {"disable": True},
    }}
    if https_routes:
        servers[HTTPS_SERVER] = {
            "listen": [listen_address(listen.bind, listen.https_port)],
            "routes": https_routes,
            # TLS on: certificates by SNI from load_files, or Caddy's own ACME for tls = "acme".
            "tls_connection_policies": [{}],
            "automatic_https": {"disable_redirects": True, **({} if acme else {"disable": True})},
        }
    config: dict[str, Any] = {"apps": {"http": {"servers": servers}}}
    if files:
        config["apps"].setdefault("tls", {})["certificates"] = {"load_files": files}
    policy = _acme_policy(table)
    if policy is not None:
        config["apps"].setdefault("tls", {})["automation"] = {"policies": [policy]}
    return config


def render_fragment(table: ExistingTable) -> str:
    return json.dumps(build_fragment(table), indent=2, sort_keys=True) + "\n"


def _ports(server: dict[str, Any]) -> set[str]:
    return {str(address).rsplit(":", 1)[-1] for address in server.get("listen", [])}


def _is_ours(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    return str(item.get("@id", "")).startswith(ID_PREFIX) or any(
        str(tag).startswith(ID_PREFIX) for tag in item.get("tags", []))


def merge(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """`base` (the host's config) with `fragment` merged in; what an earlier merge added is replaced."""
    merged = copy.deepcopy(base)
    if not isinstance(merged, dict):
        raise EngineValidationError("caddy: the main config is not a JSON object")
    servers = merged.setdefault("apps", {}).setdefault("http", {}).setdefault("servers", {})
    for name in [n for n in servers if n.startswith(ID_PREFIX)]:
        del servers[name]
    for server in servers.values():
        server["routes"] = [r for r in server.get("routes", []) if not _is_ours(r)]
    for name, ours in fragment["apps"]["http"]["servers"].items():
        host = next((s for s in servers.values() if _ports(s) & _ports(ours)), None)
        if host is None:
            servers[name] = copy.deepcopy(ours)
        else:
            host["routes"] = copy.deepcopy(ours["routes"]) + host.get("routes", [])
            if "tls_connection_policies" in ours and "tls_connection_policies" not in host:
                host["tls_connection_policies"] = [{}]
    loads = merged["apps"].setdefault("tls", {}).setdefault("certificates", {}).setdefault("load_files", [])
    loads[:] = [f for f in loads if not _is_ours(f)]
    loads.extend(copy.deepcopy(fragment["apps"].get("tls", {}).get("certificates", {}).get("load_files", [])))
    if not loads:
        del merged["apps"]["tls"]["certificates"]["load_files"]
    # Ours first: Caddy applies the first policy whose subjects match a name.
    policies = merged["apps"]["tls"].setdefault("automation", {}).setdefault("policies", [])
    policies[:] = copy.deepcopy(fragment["apps"].get("tls", {}).get("automation", {}).get("policies", [])) + [
        p for p in policies if not _is_ours(p)]
    if not policies:
        del merged["apps"]["tls"]["automation"]["policies"]
        if not merged["apps"]["tls"]["automation"]:
            del merged["apps"]["tls"]["automation"]
    return merged


def admin_address(config: dict[str, Any]) -> str:
    """Where the config's admin API listens (Caddy's default: localhost:2019)."""
    admin = config.get("admin") or {}
    if admin.get("disabled"):
        raise EngineValidationError("caddy: the main config disables the admin API, so sync cannot /load into it")
    return str(admin.get("listen") or "localhost:2019")


__all__ = ["ACME_POLICY_ID", "ID_PREFIX", "admin_address", "build_fragment", "merge", "render_fragment"]
