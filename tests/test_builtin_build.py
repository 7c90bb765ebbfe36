"""The builtin engine's optional compiled hot path: which build runs, and the switch to the sources.

`make setup` compiles protocol.py and upstream.py with Cython (plugins/builtin_proxy/setup.py);
`make test` runs the builtin engine's tests on both builds (the second time with
GOTUNNEL_PURE_PYTHON=1), so both must pass the same tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gotunnel_builtin_proxy

PACKAGE = Path(gotunnel_builtin_proxy.__file__).parent
PROBE = ("import json, gotunnel_builtin_proxy as g, gotunnel_builtin_proxy.protocol as p, "
         "gotunnel_builtin_proxy.upstream as u; print(json.dumps([g.compiled(), p.__file__, u.__file__]))")


def _probe(pure: bool) -> tuple[bool, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOTUNNEL_PURE_PYTHON"}
    if pure:
        env["GOTUNNEL_PURE_PYTHON"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    compiled, protocol, upstream = json.loads(out.stdout)
    return compiled, protocol, upstream


def test_pure_python_switch_loads_the_sources():
    compiled, protocol, upstream = _probe(pure=True)
    assert not compiled
    assert protocol == str(PACKAGE / "protocol.py") and upstream == str(PACKAGE / "upstream.py")


def test_compiled_build_is_used_when_installed():
    built = sorted(p.name for p in PACKAGE.glob("*.so"))
    if not built:
        pytest.skip("no compiled hot path installed here (built without Cython or a C compiler)")
    compiled, protocol, upstream = _probe(pure=False)
    assert compiled
    assert Path(protocol).name in built and Path(upstream).name in built
