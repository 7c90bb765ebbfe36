"""The Envoy plugin as an installed wheel, outside the repository: it needs no data files (the
config is built in Python), its entry point registers the engine, and it renders from there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

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
    source = tmp_path / "gotunnel-envoy"
    shutil.copytree(REPO / "plugins" / "envoy", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and any(s in built.stderr for s in ("No matching distribution", "Failed to establish", "Could not find a version")):
        pytest.skip(f"cannot build a wheel without the package index: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("gotunnel_envoy-*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / "render.py"
    script.write_text(SCRIPT)
    env = {"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "work")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["module"].startswith(str(site))
    assert result["entry_points"] == ["gotunnel_envoy.plugin"] and result["dist"] == "gotunnel-envoy"
    assert result["files"] == ["bootstrap.json", "cds.json", "lds.json", "rds/http.json", "rds/tls.json",
                               "validate.json"]
    assert '"web.localhost"' in result["lds"]
