"""Allocator tuning for long-running processes (the daemon, the builtin engine's workers).

Also: handing the heap's free pages back after a burst of start-up or reload work
(`release_free_heap`), and keeping terminal-only libraries out of the daemon (`is_daemon_argv`).

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after
which the ~260 KB buffers of every TLS connection come from the heap, where they fragment it:
a daemon serving HTTPS kept growing by about 1.5 MiB a minute even with every connection freed
(issue 19). A fixed threshold keeps such blocks mmapped, so closing a connection returns their
pages to the system. A no-op where the C library has no `mallopt` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: mallopt parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: mallopt parameter number of M_ARENA_MAX (glibc's malloc.h).
M_ARENA_MAX = -8
#: glibc's initial threshold: blocks from 128 KiB up are mmapped (and stay so once it is fixed).
MMAP_THRESHOLD = 128 * 1024


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


def keep_large_blocks_mmapped(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix malloc's mmap threshold at `threshold` bytes; True when the C library took it."""
    return _mallopt(M_MMAP_THRESHOLD, threshold)


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
