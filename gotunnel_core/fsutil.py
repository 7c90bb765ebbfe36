"""Small file-system helpers: private directories and atomic, owner-only writes."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import PermissionProblem


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if missing; refuse one that others can write or that we do not own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise PermissionProblem(
            f"directory {str(path)!r} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})",
            hint=f"fix the owner: chown -R {os.geteuid()} {path}",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRWXO):
        raise PermissionProblem(
            f"directory {str(path)!r} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"restrict it: chmod 700 {path}",
        )
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync and rename.

    Readers see either the old or the new content, never a truncated file; the file is
    created with `mode` before any byte is written, so secrets are never world-readable.
    """
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
