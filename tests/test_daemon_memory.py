"""The daemon's memory helpers: which command lines run the daemon (and so go without rich), and
glibc's free heap handed back."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gotunnel_core.daemon.launcher import restore_argv
from gotunnel_core.memory import is_daemon_argv, release_free_heap
from gotunnel_core.paths import StateLayout


def test_the_launchers_command_lines_run_the_daemon(tmp_path: Path) -> None:
    assert is_daemon_argv(restore_argv(StateLayout(tmp_path))[3:])
    assert is_daemon_argv(["--state-dir", str(tmp_path), "--engine", "builtin", "daemon"])


def test_other_commands_are_not_the_daemon() -> None:
    assert not is_daemon_argv(["top"])
    assert not is_daemon_argv(["--state-dir", "daemon", "top"])  # an option's value named daemon
    assert not is_daemon_argv(["start", "-d", "daemon", "-p", "3000"])
    assert not is_daemon_argv([])


def test_the_daemon_process_does_without_rich(tmp_path: Path) -> None:
    """`python -m gotunnel_core ... daemon` keeps rich out, and structlog (which would import it)
    still loads and renders; `--help` after `daemon` exits before anything is served."""
    code = ("import runpy, sys; sys.argv = ['gotunnel_core', 'daemon', '--help']\n"
            "try:\n    runpy.run_module('gotunnel_core', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import structlog, structlog.processors\n"
            "print(sys.modules.get('rich', 'absent'), structlog.processors.JSONRenderer()(None, '', {'a': 1}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == 'None {"a": 1}'


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_free_heap_gives_freed_heap_pages_back() -> None:
    """32 MiB malloc'd in 64 KiB blocks (below the mmap threshold: heap), then every other one
    freed: holes glibc cannot return by shrinking the heap's top, resident until the trim."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(512)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    try:
        for block in blocks[::2]:
            libc.free(block)
        before = psutil.Process().memory_info().rss
        assert release_free_heap()
        after = psutil.Process().memory_info().rss
        assert before - after > 12 * 1024 * 1024, (before, after)
    finally:
        for block in blocks[1::2]:
            libc.free(block)
