"""The real daemon announcing tunnels over mDNS, seen from another network namespace.

All mDNS traffic stays on a veth pair between two namespaces these tests create; the host's
real interfaces never see it. Skipped (with the reason) when not root or without `ip netns`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import pid_gone, stop_pid, wait_for
from test_mdns import _addrs_are, _advertiser, _ip, _resolver, netns_pair, procs  # noqa: F401 - fixtures


class NsGotunnel:
    """The CLI run inside namespace `ns`, announcing on `iface`, with a private state dir."""

    def __init__(self, ns: str, iface: str) -> None:
        self.ns = ns
        self.root = Path(tempfile.mkdtemp(prefix="gt-ns-", dir="/tmp"))
        self.state = self.root / "state"
        self.env = {**os.environ, "GOTUNNEL_STATE_DIR": str(self.state), "GOTUNNEL_MDNS": "1",
                    "GOTUNNEL_MDNS_INTERFACE": iface, "GOTUNNEL_HTTP_PORT": "18080", "GOTUNNEL_HTTPS_PORT": "18443",
                    "XDG_CONFIG_HOME": str(self.root / "config")}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "gotunnel_core", *args],
                              capture_output=True, text=True, env=self.env, timeout=90, cwd=self.root)

    def close(self) -> None:
        try:
            stop_pid(int((self.state / "daemon.pid").read_text()))
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def ns_gotunnel(netns_pair: Any) -> Iterator[NsGotunnel]:
    runner = NsGotunnel(netns_pair.a, netns_pair.a_if)
    try:
        yield runner
    finally:
        runner.close()


@pytest.mark.root
def test_daemon_announces_and_says_goodbye(netns_pair: Any, procs: Any, ns_gotunnel: NsGotunnel) -> None:
    ns = netns_pair
    resolver = _resolver(procs, ns.b, ns.b_addr)
    mark = resolver.mark()
    started = ns_gotunnel("start", "-d", "myapp", "-p", "9")
    assert started.returncode == 0, started.stderr
    assert "https://myapp.local:18443" in started.stdout
    resolver.wait_for(_addrs_are({ns.a_addr}), 10, f"myapp.local -> {ns.a_addr}", since=mark)
    service = resolver.wait_for(lambda m: m.get("event") == "service" and m["type"] == "_https._tcp.local.",
                                10, "the _https._tcp service", since=mark)
    assert service["port"] == 18443 and service["txt"] == {"path": "/"}

    status = json.loads(ns_gotunnel("status", "--json").stdout)
    assert status["names"]["mdns"]["myapp"]["interfaces"] == {ns.a_if: [ns.a_addr]}

    extra = ns.prefix + "77"
    _ip("-n", ns.a, "addr", "add", f"{extra}/24", "dev", ns.a_if)
    resolver.wait_for(_addrs_are({ns.a_addr, extra}), 5, "the second address announced")

    t0 = time.monotonic()
    assert ns_gotunnel("stop", "myapp").returncode == 0
    resolver.wait_for(_addrs_are(set()), 3, "goodbye after stop")
    assert time.monotonic() - t0 < 3  # the host record's TTL is 120 s: only a goodbye explains this


@pytest.mark.root
def test_start_reports_a_name_another_host_owns(netns_pair: Any, procs: Any, ns_gotunnel: NsGotunnel) -> None:
    ns = netns_pair
    other = _advertiser(procs, ns.b, ns.b_if)
    assert other.send(op="publish", name="myapp", http_port=9000, https_port=None)["ok"]
    result = ns_gotunnel("start", "-d", "myapp", "-p", "9")
    assert result.returncode == 1, result
    assert "myapp.local" in result.stderr and "myapp-2" in result.stderr
    listed = json.loads(ns_gotunnel("list", "--json").stdout)["tunnels"]
    assert listed == []
    free = ns_gotunnel("start", "-d", "myapp-2", "-p", "9")
    assert free.returncode == 0, free.stderr


@pytest.mark.root
def test_restarted_daemon_announces_again_after_sigkill(netns_pair: Any, procs: Any, ns_gotunnel: NsGotunnel) -> None:
    import signal


    ns = netns_pair
    assert ns_gotunnel("start", "-d", "myapp", "-p", "9").returncode == 0
    first = int((ns_gotunnel.state / "daemon.pid").read_text())
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: pid_gone(first),
             what="the killed daemon to vanish")
    resolver = _resolver(procs, ns.b, ns.b_addr)  # a fresh cache: it only learns from new announcements
    mark = resolver.mark()
    listed = ns_gotunnel("list", "--json")  # notices the dead daemon, starts a new one, restores the tunnel
    assert [t["name"] for t in json.loads(listed.stdout)["tunnels"]] == ["myapp"], listed.stderr
    assert int((ns_gotunnel.state / "daemon.pid").read_text()) != first
    resolver.wait_for(_addrs_are({ns.a_addr}), 10, "the restored name announced again", since=mark)
