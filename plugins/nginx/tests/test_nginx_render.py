"""nginx rendering without running nginx: template overrides, template errors, cheap plugin import,
and the work-dir swap the supervisor relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.errors import UsageError
from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel
from gotunnel_core.supervisor import WorkDir



def engine(tmp_path: Path, **settings: object) -> object:
    from gotunnel_nginx.engine import NginxEngine

    return NginxEngine(EngineContext(tmp_path / "work", {"engine": "nginx", **settings}))


def table(*raw: dict) -> RouteTable:
    tunnels = tuple(Tunnel.from_raw(t) for t in raw)
    certs = {t.name: CertFiles(f"/certs/{t.name}.pem", f"/certs/{t.name}.key") for t in tunnels}
    return RouteTable(Listen("127.0.0.1", 8080, 8443), tunnels, certs, CertFiles("/certs/d.pem", "/certs/d.key"))


WEB = {"name": "web", "backends": ["http://127.0.0.1:3000"]}


def test_plugin_import_does_not_import_jinja2() -> None:
    code = "import sys, gotunnel_nginx.plugin; print('jinja2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == "False"


def test_user_template_extends_the_packaged_default(tmp_path: Path) -> None:
    overrides = tmp_path / "tpl"
    overrides.mkdir()
    (overrides / "nginx.conf.j2").write_text(
        '{% extends "default:nginx.conf.j2" %}\n'
        "{% block http_extra %}    gzip on;{% endblock %}\n"
        "{% block location_extra %}\n            proxy_set_header X-Tunnel {{ t.name | ngx_str }};{% endblock %}\n")
    conf = engine(tmp_path, template_dir=str(overrides)).render(table(WEB))["nginx.conf"]
    assert "    gzip on;" in conf
    assert 'proxy_set_header X-Tunnel "web";' in conf
    assert "server_name web.localhost web.local;" in conf


def test_template_mistakes_are_reported_with_file_and_line(tmp_path: Path) -> None:
    overrides = tmp_path / "tpl"
    overrides.mkdir()
    (overrides / "nginx.conf.j2").write_text(
        '{% extends "default:nginx.conf.j2" %}\n{% block http_extra %}{{ no_such_var }}{% endblock %}\n')
    with pytest.raises(EngineValidationError, match="nginx template error.*no_such_var"):
        engine(tmp_path, template_dir=str(overrides)).render(table(WEB))
    (overrides / "nginx.conf.j2").write_text("{% if %}\n")
    with pytest.raises(EngineValidationError, match=r"nginx template error \(.*nginx.conf.j2:1\)"):
        engine(tmp_path, template_dir=str(overrides)).render(table(WEB))
    with pytest.raises(UsageError, match="template_dir"):
        engine(tmp_path, template_dir=str(tmp_path / "missing")).render(table(WEB))


def test_backends_of_one_tunnel_must_share_scheme_and_prefix(tmp_path: Path) -> None:
    mixed = {"name": "mix", "backends": ["http://127.0.0.1:3000", "https://127.0.0.1:3001"]}
    with pytest.raises(EngineValidationError, match="must share one scheme and path prefix"):
        engine(tmp_path).render(table(mixed))


def test_pages_are_files_with_escaped_html(tmp_path: Path) -> None:
    files = engine(tmp_path).render(table(WEB, {"name": "*.wild", "backends": ["http://127.0.0.1:3001"]}))
    assert "web.localhost" in files["pages/404.html"] and "*.wild" in files["pages/404.html"]
    assert "http://127.0.0.1:3001" in files["pages/502-_.wild.html"]
    assert 'alias "current/pages/502-_.wild.html";' in files["nginx.conf"]
    assert "<html" not in files["nginx.conf"]


def test_workdir_swaps_current_atomically_and_prunes(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w").ensure()
    for generation in range(1, 7):
        assert work.next_generation() == generation
        work.write_generation(generation, {"nginx.conf": f"# {generation}\n", "pages/404.html": "x"})
        work.swap(generation)
        assert (work.current / "nginx.conf").read_text() == f"# {generation}\n"
        assert work.current_generation() == generation
    work.swap(2)  # e.g. a rollback: the live generation survives pruning
    work.prune(keep=2)
    assert work.generations() == [2, 5, 6]
    assert not list(work.configs.glob(".staging-*"))


def test_http2_setting_and_h2_backends_render_to_the_grpc_module(tmp_path: Path) -> None:
    grpc = {"name": "grpc", "backends": ["h2c://127.0.0.1:50051/pre"]}
    tls = {"name": "tls", "backends": ["https://localhost:6443"]}
    conf = engine(tmp_path).render(table(WEB, grpc, tls))["nginx.conf"]
    assert conf.count("listen 127.0.0.1:8443 ssl http2") == 4  # default server and every tunnel's
    assert 'rewrite ^ "/pre$uri" break;\n            grpc_pass grpc://gt_1;' in conf  # h2c: HTTP/2 prior knowledge
    assert "proxy_pass https://gt_2;" in conf and "grpc_pass grpcs://gt_2;" in conf  # https: gRPC by content type
    assert "grpc_ssl_name localhost;" in conf and "error_page 418 = @gt_2_h2;" in conf
    off = engine(tmp_path, http2=False).render(table(WEB, grpc, tls))["nginx.conf"]
    assert " http2" not in off and "grpc_pass grpc://gt_1;" in off  # only http/1.1 offered to clients
