"""gotunnel's builtin proxy engine (asyncio protocols on uvloop, httptools parsers).

The hot path (protocol.py, upstream.py) may be installed compiled as well (see setup.py).
GOTUNNEL_PURE_PYTHON=1 in the environment runs it from the .py files even then: the switch the
test suite uses to run both builds, and a way to rule the compiled one out when debugging.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from typing import Any

HOT_PATH = ("protocol", "upstream")


class _SourceFirst:
    """Meta-path finder that loads the hot-path modules from source, ahead of compiled ones."""

    def __init__(self, package: str, directory: str) -> None:
        self.files = {f"{package}.{name}": os.path.join(directory, name + ".py") for name in HOT_PATH}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        where = self.files.get(fullname)
        return importlib.util.spec_from_file_location(fullname, where) if where else None


if os.environ.get("GOTUNNEL_PURE_PYTHON") == "1":
    sys.meta_path.insert(0, _SourceFirst(__name__, os.path.dirname(__file__)))


def compiled() -> bool:
    """Whether the hot path in use is the compiled build."""
    from . import protocol, upstream

    return not (protocol.__file__ or "").endswith(".py") and not (upstream.__file__ or "").endswith(".py")
