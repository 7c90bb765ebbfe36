"""The package as an installed wheel, outside the repository: its template ships inside it, its
entry point registers the engine, and a user template can extend the packaged default."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gotunnel_core.testing.wheels import install_plugin_wheel, run_with_wheel

PROJECT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import json, sys
    from importlib import metadata
    from pathlib import Path

    import gotunnel_haproxy
    from gotunnel_core.engine import EngineContext, collect_engines
    from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel
    from gotunnel_core.plugins import make_plugin_manager

    eps = [ep for ep in metadata.entry_points(group="gotunnel") if ep.name == "haproxy"]
    specs = collect_engines(make_plugin_manager().pm)
    tunnel = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3000"]})
    table = RouteTable(Listen(), (tunnel,), {"web": CertFiles("/c/web.pem", "/c/web_key.pem")}, CertFiles("/c/d.pem", "/c/d.key"))
    engine = specs["haproxy"].engine_class(EngineContext(Path(sys.argv[1]), {"engine": "haproxy", "template_dir": sys.argv[2]}))
    files = engine.render(table)
    print(json.dumps({"module": gotunnel_haproxy.__file__, "entry_points": [ep.value for ep in eps],
                      "dist": eps[0].dist.metadata["Name"] if eps else None, "conf": files["haproxy.cfg"],
                      "key": files["certs/web.pem.key"]}))
''')


def test_installed_wheel_renders_from_its_own_template(tmp_path: Path) -> None:
    site = install_plugin_wheel(PROJECT, tmp_path)
    assert (site / "gotunnel_haproxy" / "templates" / "haproxy.cfg.j2").is_file()
    assert (site / "gotunnel_haproxy" / "py.typed").is_file()

    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "haproxy.cfg.j2").write_text(
        '{% extends "default:haproxy.cfg.j2" %}\n{% block defaults_extra %}\n    # user override here{% endblock %}\n')
    result = run_with_wheel(site, SCRIPT, tmp_path, str(tmp_path / "work"), str(overrides))
    assert result["module"].startswith(str(site))
    assert result["entry_points"] == ["gotunnel_haproxy.plugin"] and result["dist"] == "gotunnel-haproxy"
    assert "    # user override here" in result["conf"]  # the override extended the packaged template
    assert "backend tunnel:web" in result["conf"] and result["key"] == "/c/web_key.pem"
