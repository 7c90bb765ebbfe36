"""The Envoy plugin as an installed wheel, outside the repository: it needs no data files (the
config is built in Python), its entry point registers the engine, and it renders from there."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gotunnel_core.testing.wheels import install_plugin_wheel, run_with_wheel

PROJECT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import json, sys
    from importlib import metadata
    from pathlib import Path

    import gotunnel_envoy
    from gotunnel_core.engine import EngineContext, collect_engines
    from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel
    from gotunnel_core.plugins import make_plugin_manager

    eps = [ep for ep in metadata.entry_points(group="gotunnel") if ep.name == "envoy"]
    specs = collect_engines(make_plugin_manager().pm)
    tunnel = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3000"]})
    table = RouteTable(Listen(), (tunnel,), {"web": CertFiles("/c/web.pem", "/c/web.key")}, CertFiles("/c/d.pem", "/c/d.key"))
    engine = specs["envoy"].engine_class(EngineContext(Path(sys.argv[1]), {"engine": "envoy"}))
    files = engine.render(table)
    print(json.dumps({"module": gotunnel_envoy.__file__, "entry_points": [ep.value for ep in eps],
                      "dist": eps[0].dist.metadata["Name"] if eps else None, "files": sorted(files),
                      "lds": files["lds.json"]}))
''')


def test_installed_wheel_registers_and_renders(tmp_path: Path) -> None:
    site = install_plugin_wheel(PROJECT, tmp_path)
    result = run_with_wheel(site, SCRIPT, tmp_path, str(tmp_path / "work"))
    assert result["module"].startswith(str(site))
    assert result["entry_points"] == ["gotunnel_envoy.plugin"] and result["dist"] == "gotunnel-envoy"
    assert result["files"] == ["bootstrap.json", "cds.json", "lds.json", "rds/http.json", "rds/http_lan.json", "rds/tls.json",
                               "rds/tls_lan.json", "validate.json"]
    assert '"web.localhost"' in result["lds"]
