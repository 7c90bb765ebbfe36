"""The memory helpers: which command lines run unattended (and so go without rich), and glibc's
free heap handed back."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gotunnel_core.daemon.launcher import restore_argv
from gotunnel_core.memory import BACKGROUND_COMMANDS, GLOBAL_VALUE_OPTIONS, background_command, release_free_heap
from gotunnel_core.paths import StateLayout


def test_the_launchers_command_lines_run_the_daemon(tmp_path: Path) -> None:
    assert background_command(restore_argv(StateLayout(tmp_path))[3:]) == "daemon"
    assert background_command(["--state-dir", str(tmp_path), "--engine", "builtin", "daemon"]) == "daemon"


def test_team_hub_and_edge_command_lines_are_background_commands() -> None:
    assert background_command(["hub", "--listen", "10.0.0.6:7443", "--etcd", "http://10.0.0.5:2379"]) == "hub"
    assert background_command(["--log-level=info", "edge", "--hub", "h:1"]) == "edge"


def test_other_commands_are_not_background_commands() -> None:
    assert background_command(["top"]) is None
    assert background_command(["--state-dir", "daemon", "top"]) is None  # an option's value named daemon
    assert background_command(["--engine", "hub", "status"]) is None
    assert background_command(["start", "-d", "daemon", "-p", "3000"]) is None
    assert background_command(["--", "daemon"]) is None
    assert background_command([]) is None


def test_the_global_options_with_values_are_the_clis() -> None:
    """GLOBAL_VALUE_OPTIONS is written out (the CLI cannot be imported before the decision);
    it must name exactly the group's options that take a value."""
    import click

    from gotunnel_core.cli.app import cli

    taking = {o for p in cli.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
    assert taking == GLOBAL_VALUE_OPTIONS
    assert {"daemon"} <= BACKGROUND_COMMANDS


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


_WHERE_BLOCKS_GO = """
import ctypes
from gotunnel_core.memory import TRIM_THRESHOLD, keep_large_blocks_mmapped

assert keep_large_blocks_mmapped(trim=TRIM_THRESHOLD)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def in_heap(size):
    block = libc.malloc(size)
    lo, hi = [tuple(int(x, 16) for x in line.split()[0].split("-"))
              for line in open("/proc/self/maps") if "[heap]" in line][0]
    libc.free(block)
    return lo <= block < hi

print(in_heap(256 * 1024), in_heap(1024 * 1024))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_a_tls_connections_buffer_comes_from_the_heap_and_larger_blocks_are_mmapped() -> None:
    """uvloop allocates 256 KiB per TLS connection: from the heap (no mmap and munmap per
    connection, issue 20), while larger blocks stay mmapped for good (issue 19). Run in a fresh
    interpreter, as the daemon sets it at start."""
    out = subprocess.run([sys.executable, "-c", _WHERE_BLOCKS_GO], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"], out.stdout
