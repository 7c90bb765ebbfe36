"""HAProxy rendering without running HAProxy: the files beside the config (maps, crt-list, linked
keys, pages), weights, listen addresses, template overrides and errors, and the validator's words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.engine import EngineContext, EngineValidationError, RenderedLink
from gotunnel_core.errors import UsageError
from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel
from gotunnel_haproxy.engine import HAProxyEngine
from gotunnel_haproxy.render import HOST_EXPR, MAX_PAGE

WEB = {"name": "web", "backends": ["http://127.0.0.1:3000"]}


def engine(tmp_path: Path, **settings: Any) -> HAProxyEngine:
    return HAProxyEngine(EngineContext(tmp_path / "work", {"engine": "haproxy", **settings}))


LISTEN = Listen("127.0.0.1", 8080, 8443)


def table(*raw: dict[str, Any], listen: Listen = LISTEN, default: bool = True) -> RouteTable:
    tunnels = tuple(Tunnel.from_raw(t) for t in raw)
    certs = {t.name: CertFiles(f"/certs/{t.name}.pem", f"/certs/{t.name}_key.pem") for t in tunnels}
    return RouteTable(listen, tunnels, certs, CertFiles("/certs/d.pem", "/certs/d_key.pem") if default else None)


def test_plugin_import_does_not_import_jinja2() -> None:
    code = "import sys, gotunnel_haproxy.plugin; print('jinja2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == "False"


def test_maps_and_crt_list_route_each_name_to_its_tunnel(tmp_path: Path) -> None:
    files = engine(tmp_path).render(table(  # in name order, as the daemon hands tables over
        {"name": "*.preview", "backends": ["http://127.0.0.1:3001"]},
        {"name": "plain", "backends": ["http://127.0.0.1:3002"], "https": False},
        {"name": "secure", "backends": ["http://127.0.0.1:3003"], "redirect_https": True},
        WEB,
    ))
    assert files["maps/http.map"].splitlines() == [
        "*.preview.localhost tunnel:_.preview", "*.preview.local tunnel:_.preview",
        "plain.localhost tunnel:plain", "plain.local tunnel:plain",
        "secure.localhost redirect-307", "secure.local redirect-307",
        "web.localhost tunnel:web", "web.local tunnel:web"]
    # LAN peers: no .localhost name, each tunnel's `lan:` twin (plain pages)
    assert files["maps/http-lan.map"].splitlines() == [
        "*.preview.local lan:tunnel:_.preview", "plain.local lan:tunnel:plain",
        "secure.local redirect-307", "web.local lan:tunnel:web"]
    https = files["maps/https.map"]
    assert "plain" not in https and "secure.localhost tunnel:secure" in https  # a --no-https tunnel is not on HTTPS
    assert files["crt-list.txt"].splitlines() == [
        "certs/default.pem",  # first: served for a name no tunnel has
        "certs/_.preview.pem *.preview.localhost *.preview.local",
        "certs/secure.pem secure.localhost secure.local",
        "certs/web.pem web.localhost web.local"]
    conf = files["haproxy.cfg"]
    assert "regsub(^[^.]+[.],*.)" in conf  # the wildcard lookup, only rendered when a wildcard exists
    assert "regsub(^[^.]+[.],*.)" not in engine(tmp_path).render(table(WEB))["haproxy.cfg"]


def test_keys_are_linked_never_copied(tmp_path: Path) -> None:
    files = engine(tmp_path).render(table(WEB, {"name": "plain", "backends": ["http://127.0.0.1:3002"], "https": False}))
    assert files["certs/web.pem"] == "/certs/web.pem" and isinstance(files["certs/web.pem"], RenderedLink)
    assert files["certs/web.pem.key"] == "/certs/web_key.pem" and isinstance(files["certs/web.pem.key"], RenderedLink)
    assert files["certs/default.pem.key"] == "/certs/d_key.pem"
    assert "certs/plain.pem" not in files  # no certificate for a tunnel never served over TLS


def test_weights_are_scaled_into_haproxys_range(tmp_path: Path) -> None:
    conf = engine(tmp_path).render(table({"name": "w", "backends": [
        {"url": "http://127.0.0.1:3000", "weight": 1000}, {"url": "http://127.0.0.1:3001", "weight": 1},
        {"url": "http://127.0.0.1:3002", "weight": 500}]}))["haproxy.cfg"]
    assert "server s0 127.0.0.1:3000 weight 256" in conf
    assert "server s1 127.0.0.1:3001 weight 1" in conf
    assert "server s2 127.0.0.1:3002 weight 128" in conf
    small = engine(tmp_path).render(table({"name": "w", "backends": [
        {"url": "http://127.0.0.1:3000", "weight": 3}, "http://127.0.0.1:3001"]}))["haproxy.cfg"]
    assert "weight 3 check inter 10000ms rise 1 fall 1 observe layer4" in small  # passive ejection, two backends
    assert "observe" not in engine(tmp_path).render(table(WEB))["haproxy.cfg"]  # nothing to eject to with one


def test_backends_may_mix_schemes_but_not_path_prefixes(tmp_path: Path) -> None:
    conf = engine(tmp_path).render(table({"name": "mix", "backends": [
        "http://127.0.0.1:3000/app", "https://api.example.test:8443/app", "h2c://127.0.0.1:50051/app"]}))["haproxy.cfg"]
    assert "server s1 api.example.test:8443 weight 1 check inter 10000ms rise 1 fall 1 observe layer4 error-limit 1 " \
           "on-error mark-down ssl verify none sni str(api.example.test)" in conf
    assert "server s2 127.0.0.1:50051 weight 1" in conf and conf.count("proto h2") == 2  # the tunnel and its LAN twin
    assert "server s2 127.0.0.1:50051 weight 1 track tunnel:mix/s2 proto h2" in conf  # the twin follows its health
    assert "http-request set-path '/app'%[path]" in conf
    with pytest.raises(EngineValidationError, match="share one path prefix"):
        engine(tmp_path).render(table({"name": "x", "backends": ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]}))


def test_not_found_page_is_log_format_and_fits_one_buffer(tmp_path: Path) -> None:
    many = [{"name": f"tunnel-{i:04d}", "backends": ["http://127.0.0.1:3000"]} for i in range(1000)]
    page = engine(tmp_path).render(table(*many))["pages/404.html"]
    assert page.count(HOST_EXPR) == 1 and page.replace(HOST_EXPR, "").count("%") % 2 == 0
    assert len(page.encode()) <= MAX_PAGE + 100  # `%%` may add a few bytes over the page itself
    assert "tunnel-0000" in page and "tunnel-0999" not in page and "more (<code>gotunnel list</code>" in page
    small = engine(tmp_path).render(table(WEB))["pages/404.html"]
    assert "web.localhost" in small and "more" not in small


def test_error_pages_are_complete_http_responses(tmp_path: Path) -> None:
    files = engine(tmp_path).render(table(WEB, {"name": "hc", "backends": ["http://127.0.0.1:3001"], "health": "/up"}))
    raw = files["pages/502-web.http"]
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 502 Bad Gateway\r\n") and f"Content-Length: {len(body.encode())}" in head
    assert "web" in body and "127.0.0.1:3000" in body
    assert "pages/503-hc.html" in files and "pages/503-web.html" not in files  # only with health checks
    assert "if { nbsrv(tunnel:hc) eq 0 }" in files["haproxy.cfg"]


@pytest.mark.parametrize(("bind", "expected"), [("127.0.0.1", "bind 127.0.0.1:8080\n"), ("::", "bind [::]:8080 v4v6\n"),
                                                 ("::1", "bind [::1]:8080 v6only\n")])
def test_listen_addresses(tmp_path: Path, bind: str, expected: str) -> None:
    assert expected in engine(tmp_path).render(table(WEB, listen=Listen(bind, 8080, 8443)))["haproxy.cfg"]


def test_http2_setting_and_a_table_without_certificates(tmp_path: Path) -> None:
    assert "ssl crt-list crt-list.txt alpn h2,http/1.1" in engine(tmp_path).render(table(WEB))["haproxy.cfg"]
    off = engine(tmp_path, http2=False).render(table(WEB))["haproxy.cfg"]
    assert "alpn http/1.1\n" in off and "h2" not in off
    bare = engine(tmp_path).render(table({"name": "p", "backends": ["http://127.0.0.1:1"], "https": False}, default=False))
    assert "tcp-request connection reject" in bare["haproxy.cfg"] and bare["crt-list.txt"] == ""


def test_user_template_extends_the_packaged_default(tmp_path: Path) -> None:
    overrides = tmp_path / "tpl"
    overrides.mkdir()
    (overrides / "haproxy.cfg.j2").write_text(
        '{% extends "default:haproxy.cfg.j2" %}\n'
        "{% block global_extra %}\n    tune.bufsize 32768{% endblock %}\n"
        "{% block backend_extra %}\n    http-request set-header X-Tunnel {{ t.name | hap_lf }}{% endblock %}\n")
    conf = engine(tmp_path, template_dir=str(overrides)).render(table(WEB))["haproxy.cfg"]
    assert "\n    tune.bufsize 32768\n" in conf
    assert "http-request set-header X-Tunnel 'web'" in conf


def test_template_mistakes_and_bad_template_dirs_are_reported(tmp_path: Path) -> None:
    overrides = tmp_path / "tpl"
    overrides.mkdir()
    (overrides / "haproxy.cfg.j2").write_text(
        '{% extends "default:haproxy.cfg.j2" %}\n{% block global_extra %}{{ no_such_var }}{% endblock %}\n')
    with pytest.raises(EngineValidationError, match="haproxy template error.*no_such_var"):
        engine(tmp_path, template_dir=str(overrides)).render(table(WEB))
    with pytest.raises(UsageError, match="is not a directory"):
        engine(tmp_path, template_dir=str(tmp_path / "missing")).render(table(WEB))


def test_a_control_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(UsageError, match="too long for a unix socket"):
        HAProxyEngine(EngineContext(deep / "work", {"engine": "haproxy"})).render(table(WEB))


def test_validator_alerts_become_one_line(tmp_path: Path) -> None:
    output = ("[NOTICE]   (123) : haproxy version is 2.6.12\n[NOTICE]   (123) : path to executable is /usr/sbin/haproxy\n"
              "[ALERT]    (123) : config : parsing [/x/gen/haproxy.cfg:97] : 'server s0' : could not resolve address 'a.invalid'.\n"
              "[ALERT]    (123) : config : Error(s) found in configuration file : haproxy.cfg\n"
              "[ALERT]    (123) : config : Fatal errors found in configuration.\n")
    message = engine(tmp_path).validator_message(output, Path("/x/gen"))
    assert message == "parsing [haproxy.cfg:97] : 'server s0' : could not resolve address 'a.invalid'."
    assert engine(tmp_path).validator_message("something else\n", Path("/x")) == "something else"


def test_show_proc_is_parsed() -> None:
    from gotunnel_haproxy.master import parse_show_proc

    text = ("#<PID>          <type>          <reloads>       <uptime>        <version>\n"
            "30258           master          3 [failed: 1]   0d00h00m01s     2.6.12-1+deb12u4\n"
            "# workers\n30294           worker          0               0d00h00m00s     2.6.12-1+deb12u4\n"
            "# old workers\n30200           worker          1               0d00h00m01s     2.6.12-1+deb12u4\n"
            "# programs\n\n")
    processes = parse_show_proc(text)
    assert processes is not None
    assert (processes.reloads, processes.failed, processes.workers, processes.old_workers) == (3, 1, (30294,), (30200,))
    assert parse_show_proc("Unknown command\n") is None


def _backend_lines(config: str, name: str) -> list[str]:
    section = config.split(f"backend tunnel:{name}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


def test_host_header_backend_with_several_backends_sends_each_servers_name(tmp_path: Path) -> None:
    config = engine(tmp_path).render(table({"name": "pair", "host_header": "backend",
                                            "backends": ["http://127.0.0.1:3000", "http://localhost:3001"]}))["haproxy.cfg"]
    lines = _backend_lines(config, "pair")
    assert "http-send-name-header Host" in lines and not any(line.startswith("http-request set-header Host") for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("server ")] == ["127.0.0.1:3000", "localhost:3001"]


@pytest.mark.parametrize("backends", [["http://[::1]:3000", "http://[::1]:3001"],
                                      ["http://127.0.0.1:3000", "http://127.0.0.1:3000/"]])
def test_host_header_backend_falls_back_to_the_first_address_where_names_cannot_carry_it(
        tmp_path: Path, backends: list[str]) -> None:
    """The declared variant: `[` is no server-name character, and server names must not repeat."""
    first = Tunnel.from_raw({"name": "pair", "backends": backends}).backends[0].address
    config = engine(tmp_path).render(table({"name": "pair", "host_header": "backend", "backends": backends}))["haproxy.cfg"]
    lines = _backend_lines(config, "pair")
    assert f"http-request set-header Host '{first}'" in lines and "http-send-name-header Host" not in lines
    assert [line.split()[1] for line in lines if line.startswith("server ")] == ["s0", "s1"]


def test_given_sockets_are_bound_by_descriptor(tmp_path: Path) -> None:
    from gotunnel_haproxy.render import RenderOptions, render_files

    config = render_files(table(WEB), RenderOptions(listen_fds={8080: 7, 8443: 9}))["haproxy.cfg"]
    assert "    bind fd@7\n" in config and "    bind fd@9 ssl crt-list" in config
    assert "127.0.0.1:8080" not in config and "127.0.0.1:8443" not in config
