"""The unix socket path limit, in one place: `sockaddr_un.sun_path` holds 108 bytes on Linux and
104 on macOS and the BSDs, including the terminating NUL. Engines put their control sockets in
the work directory's `run/`, whose path grows with `--state-dir`; a path that does not fit would
fail to bind with an unhelpful message (or be truncated), so engines check first
(`SupervisedEngine.socket_path`) and fall back to loopback TCP or fail with a hint."""

from __future__ import annotations

import os
import sys

#: Bytes of `sun_path`, NUL included.
SUN_PATH_SIZE = 108 if sys.platform.startswith("linux") else 104


def socket_path_fits(path: str) -> bool:
    """Whether `path` fits a unix socket address on this platform."""
    return len(os.fsencode(path)) < SUN_PATH_SIZE


__all__ = ["SUN_PATH_SIZE", "socket_path_fits"]
