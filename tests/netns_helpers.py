"""Network namespaces for tests: a private LAN (a bridge in its own namespace) and one namespace
per machine, joined to it by a veth pair. Names are unique per run; everything is removed at
teardown, and every process started here is stopped by its pid (never by name)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def require_root_netns() -> None:
    """Skip (with the reason) unless this process may create network namespaces."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces (ip netns, veth)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip netns)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Machine:
    """One namespace on the LAN, with its address."""

    ns: str
    address: str
    lan: "Lan"

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *command]

    def run(self, *command: str, timeout: float = 60, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout, check=check, **kwargs)

    def spawn(self, *command: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process here (its pid is the command's: `ip netns exec` execs it)."""
        handle = open(log, "ab")
        proc = subprocess.Popen(self.argv(*command), stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        handle.close()
        self.lan.processes.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """Plug or unplug this machine's LAN cable."""
        _ip("netns", "exec", self.ns, "ip", "link", "set", "eth0", "up" if up else "down")


@dataclass
class Lan:
    """A bridge in its own namespace and machines attached to it (10.<a>.<b>.0/24)."""

    prefix: str = field(default_factory=lambda: f"gt{secrets.token_hex(3)}")
    subnet: str = field(default_factory=lambda: f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}")
    machines: list[Machine] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-lan"

    def start(self) -> "Lan":
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge")
        _ip("netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        _ip("netns", "exec", self.switch, "ip", "link", "set", "lo", "up")
        return self

    def add(self, role: str) -> Machine:
        index = len(self.machines) + 2
        ns = f"{self.prefix}-{role}"
        _ip("netns", "add", ns)
        self.created.append(ns)
        host_end, lan_end = f"v{self.prefix[2:]}{index}a", f"v{self.prefix[2:]}{index}b"
        _ip("link", "add", host_end, "type", "veth", "peer", "name", lan_end)
        _ip("link", "set", host_end, "netns", ns)
        _ip("link", "set", lan_end, "netns", self.switch)
        _ip("netns", "exec", self.switch, "ip", "link", "set", lan_end, "master", "br0", "up")
        address = f"{self.subnet}.{index}"
        for args in (("link", "set", host_end, "name", "eth0"), ("addr", "add", f"{address}/24", "dev", "eth0"),
                     ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
            _ip("netns", "exec", ns, "ip", *args)
        machine = Machine(ns, address, self)
        self.machines.append(machine)
        return machine

    def stop_process(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop every process started here (by pid), then delete the namespaces."""
        for proc in reversed(self.processes):
            self.stop_process(proc)
        # Anything a process left behind in a namespace (a daemon it spawned) goes with it.
        for ns in self.created:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        deadline = time.monotonic() + 10
        for ns in reversed(self.created):
            while subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
