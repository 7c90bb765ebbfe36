"""A LAN peer (a network namespace joined to this machine by a veth pair) reaches the tunnels but
never the dashboard or its API: not on the dashboard's port (loopback only), and not through the
engine's listeners by naming it in Host. Needs root (ip netns); skipped with the reason otherwise."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, wait_for

from inspect_helpers import dash_json, through
from netns_helpers import require_root_netns


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def lan_peer() -> Iterator[tuple[str, str]]:
    """(namespace, this machine's address as the peer sees it); removed at teardown."""
    require_root_netns()
    tag = secrets.token_hex(3)
    ns, host_if, peer_if = f"gtinsp-{tag}", f"gti{tag}h", f"gti{tag}p"
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", ns)
        _ip("addr", "add", f"{net}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for args in (("addr", "add", f"{net}.2/30", "dev", peer_if), ("link", "set", peer_if, "up"), ("link", "set", "lo", "up")):
            _ip("netns", "exec", ns, "ip", *args)
        yield ns, f"{net}.1"
    finally:
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def curl(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "10", "-o", "-",
                           "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)


def test_lan_peer_gets_no_dashboard_and_no_api(gotunnel: Gotunnel, echo_backend: Any, lan_peer: tuple[str, str]) -> None:
    ns, host = lan_peer
    gotunnel.env["GOTUNNEL_BIND"] = "0.0.0.0"
    backend = echo_backend()
    gotunnel("start", "-d", "lan", "-p", str(backend.port), "--inspect", check=True)
    # The peer reaches the tunnel (so the network works), and the request is recorded.
    served = curl(ns, "-H", "Host: lan.local", f"http://{host}:{gotunnel.http_port}/from-lan")
    assert served.stdout.endswith("\n200") and json.loads(served.stdout.rsplit("\n", 1)[0])["path"] == "/from-lan"
    rows = wait_for(lambda: dash_json(gotunnel, "/api/requests")["requests"], what="the LAN request recorded")
    rid = rows[0]["id"]
    hits = len(backend.hits)

    # The dashboard's port is not open to the LAN at all.
    for path in ("/", "/api/requests", f"/api/requests/{rid}?reveal=1"):
        refused = curl(ns, "-H", f"Host: gotunnel.localhost:{gotunnel.dashboard_port}",
                       f"http://{host}:{gotunnel.dashboard_port}{path}")
        assert refused.returncode == 7 and "connect" in refused.stderr.lower(), refused  # curl: could not connect
    refused = curl(ns, "-X", "POST", f"http://{host}:{gotunnel.dashboard_port}/api/requests/{rid}/replay")
    assert refused.returncode == 7

    # Naming the dashboard in Host on the engine's listeners gets the engine's 404, not the API.
    for host_header in ("gotunnel.localhost", f"gotunnel.localhost:{gotunnel.dashboard_port}", "gotunnel.local"):
        for method, path in (("GET", "/api/requests"), ("GET", "/api/tunnels"), ("POST", f"/api/requests/{rid}/replay")):
            answer = curl(ns, "-X", method, "-H", f"Host: {host_header}", f"http://{host}:{gotunnel.http_port}{path}")
            assert answer.stdout.endswith("\n404"), (host_header, path, answer.stdout[-300:])
            assert '"requests"' not in answer.stdout and "/from-lan" not in answer.stdout
    assert len(backend.hits) == hits  # nothing was replayed
    # The same machine still gets the API.
    assert through(gotunnel, "lan")[0] == 200 and dash_json(gotunnel, f"/api/requests/{rid}")["path"] == "/from-lan"
