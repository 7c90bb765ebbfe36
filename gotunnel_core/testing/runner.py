"""Driving the real CLI in tests: free ports, polling with a deadline, stopping processes by pid,
and `Gotunnel`, a runner with a private state dir whose daemon is always stopped by its pid."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    """True if a listener could bind `port` on 127.0.0.1 right now (no SO_REUSEADDR, so a port
    still in TIME_WAIT counts as taken)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, never one this test process handed out before.

    Ports come at random from below the kernel's ephemeral range: a port the kernel hands out
    for `bind(0)` is also one it uses as the source port of outgoing connections, so a busy test
    (a load loop, a proxy's upstream pool) could take it before the server meant to listen on it
    starts; random picks also keep parallel test processes apart."""
    low = 10000
    high = min(_ephemeral_range()[0], 65536) - 1
    while True:
        port = random.randint(low, high) if high > low else _kernel_port()
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port


def _kernel_port() -> int:
    """A port the kernel picks (fallback when the ephemeral range leaves no room below it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """True once `pid` has exited or is a zombie nobody reaped yet.

    One call, not `pid_exists(pid) or Process(pid).status()`: the process can be reaped between the two.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return _gone(proc)


def _gone(proc: Any) -> bool:
    """True once the process has exited (a zombie nobody reaped yet counts as exited)."""
    import psutil

    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Terminate one process by pid, escalating to SIGKILL; ignore one that is already gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    try:
        wait_for(lambda: _gone(proc), timeout=timeout, interval=0.01, what=f"pid {pid} to exit on SIGTERM")
    except AssertionError:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            return
        wait_for(lambda: _gone(proc), timeout=5, interval=0.01, what=f"pid {pid} to exit on SIGKILL")


@dataclass
class Result:
    """What one CLI run returned."""

    code: int
    out: str
    err: str


@dataclass
class Gotunnel:
    """Runs the real CLI in a subprocess against a private state dir; tracks daemons to stop."""

    state_dir: Path
    http_port: int
    https_port: int
    env: dict[str, str] = field(default_factory=dict)
    #: Extra pids a test started; stopped (by pid) at teardown with the daemon.
    seen_pids: list[int] = field(default_factory=list)
    #: The daemon's dashboard port (loopback), free at run time like the others.
    dashboard_port: int = 0

    def __call__(self, *args: str, check: bool = False, timeout: float = 90, cwd: Path | None = None,
                 extra_env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
        """Run `gotunnel ARGS`; `stdin`, when given, is fed to it (else it inherits the test's stdin)."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        proc = subprocess.run([sys.executable, "-m", "gotunnel_core", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=cwd or self.state_dir.parent,
                              input=stdin)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"gotunnel {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json", check=True).out)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state_dir / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop_daemon(self) -> None:
        """Stop this state dir's daemon by its pid: SIGTERM, then SIGKILL after a deadline."""
        pid = self.daemon_pid()
        if pid is None:
            return
        stop_pid(pid)


def gotunnel_runner() -> Iterator[Gotunnel]:
    """A runner with its own short state dir (unix socket paths stay short) and free ports, mDNS
    off; its daemon and every pid in `seen_pids` are stopped at the end (the `gotunnel` fixture)."""
    root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    state = root / "state"
    runner = Gotunnel(state, free_port(), free_port(), dashboard_port=free_port())
    runner.env = {
        "GOTUNNEL_DASHBOARD_PORT": str(runner.dashboard_port),
        "GOTUNNEL_STATE_DIR": str(state),
        "GOTUNNEL_HTTP_PORT": str(runner.http_port),
        "GOTUNNEL_HTTPS_PORT": str(runner.https_port),
        "GOTUNNEL_BIND": "127.0.0.1",
        "GOTUNNEL_MDNS": "0",
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    try:
        yield runner
    finally:
        runner.stop_daemon()
        for pid in runner.seen_pids:
            stop_pid(pid)
        shutil.rmtree(root, ignore_errors=True)
