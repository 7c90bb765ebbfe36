"""Talking to a test daemon's dashboard (its own loopback port) and sending traffic through tunnels."""

from __future__ import annotations

import http.client
import json
import os
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel


def dash(g: Gotunnel, path: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to the dashboard of `g`'s daemon, as a browser on this machine sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", g.dashboard_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": f"gotunnel.localhost:{g.dashboard_port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def dash_json(g: Gotunnel, path: str, method: str = "GET", body: bytes | None = None, expect: int = 200) -> Any:
    status, _, data = dash(g, path, method, body)
    assert status == expect, (status, data[:500])
    return json.loads(data)


def through(g: Gotunnel, name: str, path: str = "/", method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request to tunnel `name` through the engine's HTTP port."""
    conn = http.client.HTTPConnection("127.0.0.1", g.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": f"{name}.localhost:{g.http_port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def require_engine(g: Gotunnel, engine: str) -> None:
    """Skip (or fail, when GOTUNNEL_REQUIRE_ENGINES names it) unless `engine`'s program is found."""
    probe = json.loads(g("engines", "--json", check=True).out)
    row = next((r for r in probe["engines"] if r["name"] == engine), None)
    if row is None or not row["binary"]["found"]:
        required = {e.strip() for e in os.environ.get("GOTUNNEL_REQUIRE_ENGINES", "").split(",")}
        why = f"engine {engine} not available here: {row and row['binary']['hint']}"
        if engine in required:
            pytest.fail(why)
        pytest.skip(why)
