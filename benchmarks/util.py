"""Small helpers: free ports, stopping processes by pid, RSS of a process tree, a raw HTTP probe."""

from __future__ import annotations

import os
import platform
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop one process (and wait for it) by pid, escalating to SIGKILL; a vanished pid is fine."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        try:
            proc.kill()
            proc.wait(5)
        except psutil.NoSuchProcess:
            pass


def _tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (nginx: master + workers; builtin: daemon + workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Resident set size in bytes of a process plus all its descendants (nginx: master + workers)."""
    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds so far of each live process in the tree of `pid` (workers apart)."""
    out: dict[int, float] = {}
    for proc in _tree(pid):
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def tree_connections(pid: int, port: int) -> dict[int, int]:
    """Established TCP connections on local `port` held by each process of the tree of `pid`
    (how the kernel spread the load generator's connections over worker processes)."""
    out: dict[int, int] = {}
    for proc in _tree(pid):
        try:
            conns = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[proc.pid] = sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
    return out


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process and of its descendants to `cpus` (sched_setaffinity is per thread)."""
    for proc in _tree(pid):
        for tid in os.listdir(f"/proc/{proc.pid}/task") if os.path.isdir(f"/proc/{proc.pid}/task") else []:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


def http_status(port: int, host: str, path: str = "/", timeout: float = 2.0) -> int | None:
    """Status code of one plain-HTTP GET to 127.0.0.1:port with the given Host, or None on failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = sock.recv(64)
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
    except (OSError, ValueError, IndexError):
        return None


def wait_status(port: int, host: str, want: int = 200, timeout: float = 30.0, path: str = "/",
                proc: subprocess.Popen[Any] | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before serving")
        last = http_status(port, host, path)
        if last == want:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} on port {port} did not answer {want} for Host {host} within {timeout} s (last: {last})")


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it): 1,000 idle connections need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def cmd_version(argv: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"
