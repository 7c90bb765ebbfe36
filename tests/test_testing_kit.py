"""The test kit's process helpers (gotunnel_core.testing), on real child processes."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from gotunnel_core.testing import pid_gone, wait_for


def test_pid_gone_is_false_while_running_and_true_for_a_zombie_and_after_the_reap() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert not pid_gone(child.pid) and not pid_gone(os.getpid())
        assert child.stdin is not None
        child.stdin.close()  # the child reads EOF and exits; nobody reaps it yet
        wait_for(lambda: pid_gone(child.pid), what="the exited child seen as gone")
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE  # gone because a zombie
        child.wait()
        assert pid_gone(child.pid)  # reaped: no such process is gone too, not an error
    finally:
        if child.poll() is None:  # failed before it exited: stop it by its pid (Popen knows if it was reaped)
            child.kill()
            child.wait()
