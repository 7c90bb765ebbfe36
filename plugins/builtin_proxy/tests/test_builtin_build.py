"""The builtin engine's optional compiled hot path: which build runs, and the switch to the sources.

`make setup` compiles the hot-path modules (`gotunnel_builtin_proxy.HOT_PATH`) with Cython (plugins/builtin_proxy/setup.py);
`make test` runs the builtin engine's tests on both builds (the second time with
GOTUNNEL_PURE_PYTHON=1), so both must pass the same tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import gotunnel_builtin_proxy

PACKAGE = Path(gotunnel_builtin_proxy.__file__).parent
PROBE = ("import importlib, json, gotunnel_builtin_proxy as g; "
         "print(json.dumps([g.compiled(), *(importlib.import_module('gotunnel_builtin_proxy.' + name).__file__ "
         "for name in g.HOT_PATH)]))")


def _probe(pure: bool) -> tuple[bool, list[str]]:
    """Whether the compiled build is in use, and the file of each hot-path module, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "GOTUNNEL_PURE_PYTHON"}
    if pure:
        env["GOTUNNEL_PURE_PYTHON"] = "1"
    # outside the plugin's directory: `python -c` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    compiled, *files = json.loads(out.stdout)
    return compiled, files


def test_pure_python_switch_loads_the_sources():
    compiled, files = _probe(pure=True)
    assert not compiled
    assert files == [str(PACKAGE / f"{name}.py") for name in gotunnel_builtin_proxy.HOT_PATH]


def test_compiled_build_is_used_when_installed():
    built = sorted(p.name for p in PACKAGE.glob("*.so"))
    if not built:
        pytest.skip("no compiled hot path installed here (built without Cython or a C compiler)")
    compiled, files = _probe(pure=False)
    assert compiled
    assert {Path(file).name for file in files} <= set(built)


def test_a_compiled_module_older_than_its_source_is_not_run(tmp_path):
    if not list(PACKAGE.glob("*.so")):
        pytest.skip("no compiled hot path installed here (built without Cython or a C compiler)")
    checkout = tmp_path / "builtin_proxy"
    shutil.copytree(PACKAGE, checkout / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    (checkout / "setup.py").write_text("# a source checkout\n")
    # An installed wheel's files carry their unpacking times, in no particular order: date the
    # copies as a fresh build would leave them (every compiled module newer than every source).
    sources = [*(checkout / PACKAGE.name).glob("*.py"), *(checkout / PACKAGE.name).glob("*.pxd")]
    built_at = max(p.stat().st_mtime for p in sources) + 1
    for module in (checkout / PACKAGE.name).glob("*.so"):
        os.utime(module, (built_at, built_at))
    env = {k: v for k, v in os.environ.items() if k != "GOTUNNEL_PURE_PYTHON"}
    env["PYTHONPATH"] = str(checkout)  # ahead of any installed copy
    fresh = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path)
    assert json.loads(fresh.stdout)[0] is True
    source = checkout / PACKAGE.name / "protocol.py"
    later = built_at + 60
    os.utime(source, (later, later))  # edited after the build
    stale = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path)
    compiled, protocol, *_ = json.loads(stale.stdout)
    assert not compiled and protocol == str(source)
    assert "older than its sources" in stale.stderr
