"""gotunnel's builtin proxy engine (asyncio protocols on uvloop, httptools parsers).

The hot path (protocol.py, upstream.py, request.py, metrics.py, router.py, balancer.py, state.py,
tls_transport.py) may be
installed compiled as well (see setup.py).
GOTUNNEL_PURE_PYTHON=1 in the environment runs it from the .py files even then: the switch the
test suite uses to run both builds, and a way to rule the compiled one out when debugging. In a
source checkout, a compiled module older than its source is ignored too (with a warning), so an
edit takes effect before the next `make setup`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import warnings
from importlib.machinery import ModuleSpec
from typing import Any

HOT_PATH = ("protocol", "upstream", "metrics", "request", "router", "balancer", "state", "tls_transport")


class _SourceFirst:
    """Meta-path finder that loads the hot-path modules from source, ahead of compiled ones."""

    def __init__(self, package: str, directory: str) -> None:
        self.files = {f"{package}.{name}": os.path.join(directory, name + ".py") for name in HOT_PATH}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        where = self.files.get(fullname)
        return importlib.util.spec_from_file_location(fullname, where) if where else None


def _stale_build(directory: str) -> bool:
    """In a source checkout (setup.py beside the package), a compiled module older than its .py or
    .pxd was built before the last edit: the sources are the code to run, not the earlier build."""
    if not os.path.exists(os.path.join(directory, os.pardir, "setup.py")):
        return False
    for name in HOT_PATH:
        sources = [os.path.join(directory, name + ext) for ext in (".py", ".pxd")]
        newest = max(os.path.getmtime(p) for p in sources if os.path.exists(p))
        if any(os.path.getmtime(built) < newest for built in glob.glob(os.path.join(directory, name + ".*.so"))):
            return True
    return False


_here = os.path.dirname(__file__)
if os.environ.get("GOTUNNEL_PURE_PYTHON") == "1":
    sys.meta_path.insert(0, _SourceFirst(__name__, _here))
elif _stale_build(_here):
    warnings.warn("gotunnel_builtin_proxy: the compiled hot path is older than its sources; running the "
                  "sources (rebuild with `make setup`)", RuntimeWarning, stacklevel=2)
    sys.meta_path.insert(0, _SourceFirst(__name__, _here))


def compiled() -> bool:
    """Whether the hot path in use is the compiled build."""
    modules = [importlib.import_module(f"{__name__}.{name}") for name in HOT_PATH]
    return not any((module.__file__ or "").endswith(".py") for module in modules)
