"""Allocator tuning for long-running processes (the daemon, the builtin engine's workers).

Also: handing the heap's free pages back after a burst of start-up or reload work
(`release_free_heap`), and keeping terminal-only libraries out of the daemon (`is_daemon_argv`).

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after
which every large block, such as the 256 KiB bytes of each TLS read, came from the heap, where
they fragmented it: a daemon serving HTTPS kept growing by about 1.5 MiB a minute even with every
connection freed (issue 19). A fixed threshold keeps blocks above it mmapped for good. It sits
just above uvloop's 256 KiB per-connection TLS buffer, which otherwise costs an mmap and a munmap
on every TLS connection (issue 20; the builtin engine's HTTPS listener no longer uses uvloop's
TLS, its connections to https:// backends still do); a fixed trim threshold keeps such a buffer
freed at the heap's top from being handed back with brk and taken again at the next accept. A
no-op where the C library has no `mallopt` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: mallopt parameter number of M_TRIM_THRESHOLD (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
#: mallopt parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: mallopt parameter number of M_ARENA_MAX (glibc's malloc.h).
M_ARENA_MAX = -8
#: Blocks from 264 KiB up are mmapped: above uvloop's TLS buffer (SSL_READ_MAX_SIZE, 256 KiB plus
#: malloc's header), which then comes from the heap.
MMAP_THRESHOLD = 264 * 1024
#: Free memory at the heap's top kept rather than handed back, for processes that serve TLS
#: (glibc's default: 128 KiB, less than one such buffer).
TRIM_THRESHOLD = 1024 * 1024


def _glibc(name: str, *argtypes: type) -> Any:
    """The C library's function `name`, typed (returns int), or None where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def _mallopt(param: int, value: int) -> bool:
    """glibc's `mallopt(param, value)`; True when the C library took it (False without glibc)."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(param, value))


def keep_large_blocks_mmapped(threshold: int = MMAP_THRESHOLD, trim: int | None = None) -> bool:
    """Fix malloc's mmap threshold at `threshold` bytes, and its trim threshold at `trim` when
    given (else glibc's 128 KiB); True when the C library took them."""
    trimmed = trim is None or _mallopt(M_TRIM_THRESHOLD, trim)
    return _mallopt(M_MMAP_THRESHOLD, threshold) and trimmed


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count`; True when the C library took it.

    By default every thread that meets a locked arena gets its own (up to 8 per core), and each
    keeps its freed pages apart from the others': a process whose C library runs many threads
    (gRPC's core) holds several partly-empty heaps. Only effective when called before the
    process's second thread first allocates (glibc fixes the limit then), so: at start."""
    return _mallopt(M_ARENA_MAX, count)


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`); True when it did.

    Start-up and every route change allocate and free a few MiB (certificates, the route table,
    parsed configuration); glibc keeps those pages, so an idle daemon would stay that much larger.
    Measured on the builtin daemon: 1.3 MiB of a 60 MiB RSS. A no-op without glibc.
    """
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    return trim is not None and bool(trim(0))


#: The `gotunnel` group's global options that take a value (cli/app.py; a test keeps them in step).
GLOBAL_VALUE_OPTIONS = frozenset({
    "--engine", "--config", "--state-dir", "--http-port", "--https-port", "--bind", "--mdns-interface",
    "--engine-bin", "--runtime", "--log-format", "--log-level",
})
#: Commands that run unattended for days and never draw on a terminal: the daemon, and the team
#: edge's hub and edge (plugin commands).
BACKGROUND_COMMANDS = frozenset({"daemon", "hub", "edge"})


def background_command(argv: list[str]) -> str | None:
    """The subcommand of `gotunnel ARGV` when it is one of BACKGROUND_COMMANDS, else None
    (global options and their values before it are skipped, as click reads them)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return None
        if arg.startswith("-"):
            i += 2 if arg in GLOBAL_VALUE_OPTIONS else 1  # `--opt=value` is one token
            continue
        return arg if arg in BACKGROUND_COMMANDS else None
    return None
