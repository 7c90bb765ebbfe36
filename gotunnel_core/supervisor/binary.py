"""Finding an external engine's program: the engine option `bin` first, then PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Callable, Mapping, Sequence

from ..engine import BinaryStatus, engine_option


def find_binary(
    settings: Mapping[str, Any],
    engine: str,
    candidates: Sequence[str],
    version: Callable[[str], str | None] | None = None,
    install_hint: str = "",
    env: Mapping[str, str] | None = None,
) -> BinaryStatus:
    """Where `engine`'s program is and its version.

    `--engine-bin` / `GOTUNNEL_<ENGINE>_BIN` / `[engines.<engine>] bin` win; a configured value
    that is not an executable is reported as missing (never silently replaced by PATH's).
    """
    where = f"--engine-bin, GOTUNNEL_{engine.upper()}_BIN or [engines.{engine}] bin"
    configured = engine_option(settings, engine, "bin", env)
    if configured:
        configured = os.path.expanduser(str(configured))
        path = shutil.which(configured) if os.sep not in configured else configured
        if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
            return BinaryStatus(False, configured, None,
                                hint=f"{configured!r} (from {where}) is not an executable file. {install_hint}".strip())
    else:
        path = next((found for found in (shutil.which(c) for c in candidates) if found), None)
        if path is None:
            names = " or ".join(candidates)
            return BinaryStatus(False, None, None,
                                hint=f"{names} was not found on PATH. {install_hint} Or point {where} at it.".strip())
    found_version = None
    if version is not None:
        try:
            found_version = version(path)
        except (OSError, subprocess.SubprocessError, ValueError):
            found_version = None
    return BinaryStatus(True, path, found_version)


def run_for_output(argv: Sequence[str], timeout: float = 10.0) -> str:
    """stdout + stderr of a short command (version queries print to either)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return (proc.stdout + proc.stderr).strip()
