"""Install a plugin from its own wheel outside the repository and run a script against it.

Each engine plugin must work as an installed distribution: the wheel is built from a copy of
`plugins/<name>`, installed with `pip --target`, and a script runs with the core from the
repository and the plugin from the wheel (PYTHONPATH precedes any editable install), with a
PATH that lacks the environment's bin/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
_OFFLINE = ("No matching distribution", "Failed to establish", "Could not find a version")


def install_plugin_wheel(plugin: str, tmp_path: Path) -> Path:
    """Build `plugins/<plugin>` into a wheel and install it into a fresh directory; return it."""
    source = tmp_path / f"gotunnel-{plugin}"
    shutil.copytree(REPO / "plugins" / plugin, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and any(s in built.stderr for s in _OFFLINE):
        pytest.skip(f"cannot build a wheel without the package index: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    module = "gotunnel_builtin_proxy" if plugin == "builtin_proxy" else f"gotunnel_{plugin}"
    wheel = next((tmp_path / "dist").glob(f"{module}-*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return site


def run_with_wheel(site: Path, script: str, tmp_path: Path, *args: str) -> Any:
    """Run `script` (which prints one JSON document) with the core from the repository and the
    plugin from `site`; return the parsed output."""
    path = tmp_path / "render.py"
    path.write_text(script)
    env = {"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
