"""Allocator tuning for long-running processes (the daemon, the builtin engine's workers).

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after
which the ~260 KB buffers of every TLS connection come from the heap, where they fragment it:
a daemon serving HTTPS kept growing by about 1.5 MiB a minute even with every connection freed
(issue 19). A fixed threshold keeps such blocks mmapped, so closing a connection returns their
pages to the system. A no-op where the C library has no `mallopt` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import sys

#: mallopt parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: glibc's initial threshold: blocks from 128 KiB up are mmapped (and stay so once it is fixed).
MMAP_THRESHOLD = 128 * 1024


def keep_large_blocks_mmapped(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix malloc's mmap threshold at `threshold` bytes; True when the C library took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
