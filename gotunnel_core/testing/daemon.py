"""Helpers for tests that drive the real CLI and daemon (`Gotunnel`): plain/TLS GETs by tunnel
name, selecting an external engine, what the daemon reports about its engine, and which of the
engine's processes are alive."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from typing import Any

from .runner import Gotunnel


def http_get(port: int, host: str, path: str = "/", *, https_ca: str | None = None, sni: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET to 127.0.0.1:port with the given Host (and, for HTTPS, SNI) trusting only `https_ca`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if https_ca:
        # Connect by address, but send SNI and verify the certificate for the tunnel's name.
        ctx = ssl.create_default_context(cafile=https_ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sock = ctx.wrap_socket(raw, server_hostname=sni or host.split(":")[0])
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def serves(g: Gotunnel, name: str) -> bool:
    """Whether `NAME.localhost` answers 200 over HTTP right now."""
    try:
        return http_get(g.http_port, f"{name}.localhost")[0] == 200
    except OSError:
        return False


def engine_status(g: Gotunnel) -> dict[str, Any]:
    """The `engine` object of `gotunnel status --json`."""
    return g.json("status")["engine"]


def use_engine(g: Gotunnel, engine: str, binary: str | None = None) -> Gotunnel:
    """Make `g` run the external `engine` (its program `binary` if given), restarting it fast."""
    g.env["GOTUNNEL_ENGINE"] = engine
    if binary is not None:
        g.env[f"GOTUNNEL_{engine.upper()}_BIN"] = str(binary)
    g.env[f"GOTUNNEL_{engine.upper()}_BACKOFF"] = "0.1"
    return g


def supervisor_record(g: Gotunnel, engine: str) -> dict[str, Any]:
    """What the supervisor recorded about its engine process (pid, create time, argv)."""
    return json.loads((g.state_dir / "engines" / engine / "supervisor.json").read_text())


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`: an engine's master and workers."""
    import psutil

    alive = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive
