"""Install a plugin from its own wheel into a private directory and run a script against it.

An engine plugin must work as an installed distribution, outside its source tree: the wheel is
built from a copy of the plugin's project directory, installed with `pip --target`, and a script
runs with the plugin from there (PYTHONPATH precedes any other install of it) and the installed
core, with a PATH that lacks the environment's bin/ and a private HOME.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_OFFLINE = ("No matching distribution", "Failed to establish", "Could not find a version")


def install_plugin_wheel(project: Path, tmp_path: Path) -> Path:
    """Build the plugin project at `project` into a wheel and install it into a fresh directory; return it."""
    source = tmp_path / project.name
    shutil.copytree(project, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "tests"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and any(s in built.stderr for s in _OFFLINE):
        pytest.skip(f"cannot build a wheel without the package index: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return site


def run_with_wheel(site: Path, script: str, tmp_path: Path, *args: str) -> Any:
    """Run `script` (which prints one JSON document) with the plugin from `site`; return the parsed output."""
    path = tmp_path / "render.py"
    path.write_text(script)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
