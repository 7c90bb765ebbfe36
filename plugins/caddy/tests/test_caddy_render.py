"""Caddy rendering without a running caddy: structure, escaping rules, refusals, `render --format`.

The golden files (JSON and Caddyfile) are checked by test_render_golden.py..
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from caddy_helpers import caddy_binary, needs_caddy
from gotunnel_core.testing import Gotunnel
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel

STATE = "/var/lib/gotunnel-golden"

TUNNELS = [
    {"name": "web", "backends": ["http://127.0.0.1:3000"], "host_header": "backend"},
    {"name": "api", "backends": [{"url": "http://127.0.0.1:4000/v2", "weight": 3}, {"url": "http://[::1]:4001/v2", "weight": 1}],
     "redirect_https": True,
     "health": {"path": "/health", "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 3},
     "headers": {"request": {"add": {"X-Env": "dev {env.HOME}"}, "remove": ["Cookie"]},
                 "response": {"add": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}}},
    {"name": "*.preview", "backends": ["https://localhost:5443"], "https": False, "host_header": "preview.internal:5443"},
]


def golden_table(cert_dir: str = STATE + "/certs") -> RouteTable:
    tunnels = tuple(Tunnel.from_raw(t) for t in TUNNELS)
    certs = {t.name: CertFiles(f"{cert_dir}/{t.name.replace('*', '_')}.crt", f"{cert_dir}/{t.name.replace('*', '_')}.key")
             for t in tunnels}
    return RouteTable(Listen("0.0.0.0", 8080, 8443), tunnels, certs,
                      CertFiles(f"{cert_dir}/_default.crt", f"{cert_dir}/_default.key"))


def options():
    from gotunnel_caddy.render import RenderOptions

    return RenderOptions(admin_socket=STATE + "/engines/caddy/run/admin.sock", storage_dir=STATE + "/engines/caddy/data")


@needs_caddy
def test_golden_table_validates_and_the_caddyfile_adapts_to_the_same_pages(tmp_path: Path) -> None:
    from gotunnel_core.testing.engines import make_pki
    from gotunnel_caddy.caddyfile import render_caddyfile
    from gotunnel_caddy.render import RenderOptions, build_config, render_json

    pki = make_pki(tmp_path / "pki", ["web"])
    table = golden_table(str(tmp_path / "pki"))
    for files in [*table.certs.values(), table.default_cert]:
        Path(files.cert).write_bytes(Path(pki.certs["web"].cert).read_bytes())
        Path(files.key).write_bytes(Path(pki.certs["web"].key).read_bytes())
    opts = RenderOptions(admin_socket=str(tmp_path / "admin.sock"), storage_dir=str(tmp_path / "data"))
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    (tmp_path / "caddy.json").write_text(render_json(table, opts))
    result = subprocess.run([caddy_binary(), "validate", "--config", str(tmp_path / "caddy.json")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "Caddyfile").write_text(render_caddyfile(table, opts))
    result = subprocess.run([caddy_binary(), "adapt", "--validate", "--config", str(tmp_path / "Caddyfile")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    adapted, native = json.loads(result.stdout), build_config(table, opts)
    assert _strings(adapted, "body") - {"Misdirected Request: the TLS name does not match Host"} \
        == _strings(native, "body") - {"Misdirected Request: the TLS name does not match Host\n"}
    assert _strings(adapted, "X-Env") == _strings(native, "X-Env") == {"dev \\{env.HOME\\}"}
    assert _strings(adapted, "Host") == _strings(native, "Host") == {"{http.reverse_proxy.upstream.hostport}",
                                                                     "preview.internal:5443"}


def _strings(node: object, key: str) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found |= {v} if isinstance(v, str) else {x for x in v if isinstance(x, str)}
            found |= _strings(v, key)
    elif isinstance(node, list):
        for item in node:
            found |= _strings(item, key)
    return found


def test_structure_of_the_native_config() -> None:
    from gotunnel_caddy.render import build_config

    config = build_config(golden_table(), options())
    assert config["admin"]["listen"] == f"unix/{STATE}/engines/caddy/run/admin.sock"
    servers = config["apps"]["http"]["servers"]
    assert {s["automatic_https"]["disable"] for s in servers.values()} == {True}
    assert "pki" not in config["apps"]  # Caddy's internal CA is never configured
    routes = [r for r in servers["gotunnel_http"]["routes"] if "host" in (r.get("match") or [{}])[0]]
    hosts = [r["match"][0]["host"] for r in routes]
    assert hosts[0][:2] == ["api.localhost", "api.local"] and hosts[-1][:2] == ["*.preview.localhost", "*.preview.local"]
    api = routes[0]["handle"][0]["routes"]
    assert api[-1]["handle"][0]["status_code"] == 307  # redirect_https on the HTTP listener (temporary by default)
    https_routes = [r for r in servers["gotunnel_https"]["routes"] if "host" in (r.get("match") or [{}])[0]]
    https_api = https_routes[0]["handle"][0]["routes"]
    proxy = https_api[-1]["handle"][-1]
    assert https_api[-1]["handle"][1] == {"handler": "rewrite", "uri": "/v2{http.request.uri}"}
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "weighted_round_robin", "weights": [3, 1]}
    assert proxy["health_checks"]["active"] == {"uri": "/v2/health", "interval": "5000ms", "timeout": "2000ms",
                                                "passes": 2, "fails": 3}
    assert proxy["health_checks"]["passive"] == {"fail_duration": "10000ms", "max_fails": 1}
    assert proxy["headers"]["request"]["set"]["X-Env"] == ["dev \\{env.HOME\\}"]
    assert "flush_interval" not in proxy  # Caddy flushes SSE and chunked streams itself
    policies = servers["gotunnel_https"]["tls_connection_policies"]
    assert policies[-1] == {"certificate_selection": {"any_tag": ["gotunnel:default"]}}
    tags = {tag for f in config["apps"]["tls"]["certificates"]["load_files"] for tag in f["tags"]}
    assert tags == {"gotunnel:api", "gotunnel:web", "gotunnel:*.preview", "gotunnel:default"}


def test_placeholders_in_pages_and_values_are_escaped() -> None:
    from gotunnel_caddy.render import caddy_literal, not_found_body

    assert caddy_literal("{env.SECRET} \\{x}") == "\\{env.SECRET\\} \\\\{x\\}"
    body = not_found_body(golden_table())
    assert "{http.request.host}" in body and "body\\{font-family" in body
    assert "\x00" not in body


def test_refusals_name_the_problem() -> None:
    from gotunnel_caddy.caddyfile import literal
    from gotunnel_caddy.render import build_config

    listen = Listen("127.0.0.1", 8080, 8443)
    mixed = Tunnel.from_raw({"name": "m", "backends": ["http://127.0.0.1:1", "https://127.0.0.1:2"]})
    with pytest.raises(EngineValidationError, match="mixes http and https"):
        build_config(RouteTable(listen, (mixed,)))
    prefixes = Tunnel.from_raw({"name": "p", "backends": ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]})
    with pytest.raises(EngineValidationError, match="different path prefixes"):
        build_config(RouteTable(listen, (prefixes,)))
    web = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:1"]})
    with pytest.raises(EngineValidationError, match="braces and control characters"):
        build_config(RouteTable(listen, (web,), {"web": CertFiles("/tmp/{env.HOME}/c", "/tmp/k")}))
    with pytest.raises(EngineValidationError, match="environment variable"):
        literal("{$HOME}")


def test_render_format_through_the_cli(gotunnel: Gotunnel, tmp_path: Path) -> None:
    config = tmp_path / "gotunnel.toml"
    config.write_text('[[tunnels]]\nname = "web"\nbackends = ["http://127.0.0.1:3000"]\n')
    native = gotunnel("--config", str(config), "render", "--engine", "caddy", check=True)
    assert json.loads(native.out)["apps"]["http"]["servers"]["gotunnel_http"]["listen"] == [f"127.0.0.1:{gotunnel.http_port}"]
    caddyfile = gotunnel("--config", str(config), "render", "--engine", "caddy", "--format", "caddyfile", check=True)
    assert f"http://web.localhost:{gotunnel.http_port}" in caddyfile.out and "auto_https off" in caddyfile.out
    out = tmp_path / "out"
    written = gotunnel("--config", str(config), "render", "--engine", "caddy", "--format", "caddyfile", "--out", str(out))
    assert written.code == 0 and (out / "Caddyfile").is_file()
    bad = gotunnel("--config", str(config), "render", "--engine", "caddy", "--format", "yaml")
    assert bad.code == 2 and "renders json, caddyfile" in bad.err
    builtin = gotunnel("--config", str(config), "render", "--engine", "builtin", "--format", "caddyfile")
    assert builtin.code == 2 and "cannot render format 'caddyfile'" in builtin.err
    assert gotunnel("--config", str(config), "render", "--engine", "builtin", check=True).out.startswith("{")


def test_engines_reports_caddy_and_its_version(gotunnel: Gotunnel) -> None:
    engines = {e["name"]: e for e in gotunnel.json("engines")["engines"]}
    caddy = engines["caddy"]["binary"]
    if caddy_binary() is None:
        assert not caddy["found"] and "gotunnel-caddy[bin]" in caddy["hint"]
    else:
        assert caddy["found"] and caddy["path"].endswith("caddy") and caddy["version"].startswith("v2.")
    missing = gotunnel("engines", "--json", extra_env={"GOTUNNEL_CADDY_BIN": "/nonexistent/caddy"})
    entry = {e["name"]: e for e in json.loads(missing.out)["engines"]}["caddy"]["binary"]
    assert entry["found"] is False and "/nonexistent/caddy" in entry["hint"]


def test_http2_setting_and_upstream_http_versions(tmp_path: Path) -> None:
    from gotunnel_caddy.engine import CaddyEngine
    from gotunnel_caddy.render import RenderOptions, build_config
    from gotunnel_core.engine import EngineContext

    listen = Listen("127.0.0.1", 8080, 8443)
    tunnels = tuple(Tunnel.from_raw({"name": n, "backends": [u]}) for n, u in
                    (("h1", "http://127.0.0.1:1"), ("tls", "https://127.0.0.1:2"), ("grpc", "h2c://127.0.0.1:3")))
    certs = {t.name: CertFiles(f"/c/{t.name}.crt", f"/c/{t.name}.key") for t in tunnels}

    def versions(config: dict) -> dict[str, list[str]]:
        routes = [r for r in config["apps"]["http"]["servers"]["gotunnel_http"]["routes"][:-1]
                  if "host" in r["match"][0]]  # not the guard routes before the tunnels
        return {r["match"][0]["host"][0].split(".")[0]: r["handle"][0]["routes"][-1]["handle"][-1]["transport"]["versions"]
                for r in routes}

    on = build_config(RouteTable(listen, tunnels, certs), RenderOptions())
    assert on["apps"]["http"]["servers"]["gotunnel_https"]["protocols"] == ["h1", "h2"]
    assert versions(on) == {"h1": ["1.1"], "tls": ["1.1", "2"], "grpc": ["h2c", "2"]}
    off = build_config(RouteTable(listen, tunnels, certs), RenderOptions(http2=False))
    assert off["apps"]["http"]["servers"]["gotunnel_https"]["protocols"] == ["h1"]
    # Go advertises RFC 8441 (which Caddy bridges) only with this GODEBUG: set when http2 is on.
    env_on = CaddyEngine(EngineContext(tmp_path / "on", {"engine": "caddy"})).environment()
    env_off = CaddyEngine(EngineContext(tmp_path / "off", {"engine": "caddy", "http2": False})).environment()
    assert "http2xconnect=1" in env_on["GODEBUG"].split(",") and "GODEBUG" not in env_off
