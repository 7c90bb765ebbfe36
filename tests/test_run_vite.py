"""`gotunnel run -- npm run dev` with a real Vite dev server (tests/fixtures/vite-app, Vite 7 from
npm): the page and the HMR websocket through the tunnel over HTTPS, Vite's Host refusal named by
`start` and `doctor` with its fix, and nothing left running after Ctrl-C.

node_modules is installed once per lockfile into a cache directory (GOTUNNEL_TEST_CACHE, default
/tmp/gotunnel-test-cache) and symlinked into each test's copy of the project; the tests skip, saying
why, when npm or the registry is not reachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "vite-app"


@pytest.fixture(scope="session")
def vite_modules() -> Path:
    """node_modules for the fixture's lockfile, installed by `npm ci` once and cached."""
    from filelock import FileLock

    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian: nodejs + npm)")
    lock = (FIXTURE / "package-lock.json").read_bytes()
    root = Path(os.environ.get("GOTUNNEL_TEST_CACHE") or "/tmp/gotunnel-test-cache")
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"vite-{hashlib.sha256(lock).hexdigest()[:16]}"
    with FileLock(str(target) + ".lock"):
        if not (target / "node_modules" / ".bin" / "vite").exists():
            staging = Path(tempfile.mkdtemp(prefix="vite-install-", dir=root))
            try:
                for name in ("package.json", "package-lock.json"):
                    shutil.copy(FIXTURE / name, staging / name)
                proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging,
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    pytest.skip(f"`npm ci` for the Vite fixture failed (registry unreachable?): "
                                f"{(proc.stderr or proc.stdout).strip()[-300:]}")
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture
def vite_project(tmp_path: Path, vite_modules: Path) -> Path:
    project = tmp_path / "vite-app"
    shutil.copytree(FIXTURE, project)
    (project / "node_modules").symlink_to(vite_modules)
    return project


@pytest.fixture
def running_vite(gotunnel: Gotunnel, vite_project: Path, tmp_path: Path) -> Iterator[Any]:
    """`gotunnel run -d viteapp -- npm run dev` in the background; stopped by pid at teardown."""
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with out.open("wb") as out_fh, err.open("wb") as err_fh:
        proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "run", "-d", "viteapp", "--", "npm", "run", "dev"],
                                cwd=vite_project, env={**os.environ, **gotunnel.env}, stdin=subprocess.DEVNULL,
                                stdout=out_fh, stderr=err_fh)
    proc.out, proc.err = out, err  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid)
            proc.wait(10)


def _ca(g: Gotunnel) -> str:
    return g("cert", "ca", "--path", check=True).out.strip()


def _page(g: Gotunnel, ca: str) -> bytes | None:
    try:
        status, _, body = http_get(g.https_port, f"viteapp.localhost:{g.https_port}", https_ca=ca)
    except OSError:
        return None
    return body if status == 200 and b"/@vite/client" in body else None


def _backend_port(g: Gotunnel) -> int:
    return int(g.json("list")["tunnels"][0]["backends"][0]["url"].rsplit(":", 1)[1])


def test_vite_page_and_hmr_websocket_through_the_tunnel(gotunnel: Gotunnel, running_vite: Any,
                                                        vite_project: Path) -> None:
    from websockets.sync.client import connect as ws_connect

    ca = _ca(gotunnel)
    wait_for(lambda: _page(gotunnel, ca), timeout=90, what="Vite's page through the tunnel")
    err = running_vite.err.read_text()
    assert "Vite: added -- --port" in err and "--strictPort" in err
    port = _backend_port(gotunnel)
    assert f"--port {port} --strictPort" in err  # Vite listens on exactly the port gotunnel chose
    host = f"viteapp.localhost:{gotunnel.https_port}"
    status, _, client = http_get(gotunnel.https_port, host, "/@vite/client", https_ca=ca)
    assert status == 200
    token = re.search(rb'const wsToken = "([^"]+)"', client)
    assert token is not None, client[:500]
    for path in ("/main.js", "/style.css"):  # into Vite's module graph, as a browser would load them
        assert http_get(gotunnel.https_port, host, path, https_ca=ca)[0] == 200
    raw = socket.create_connection(("127.0.0.1", gotunnel.https_port), timeout=10)
    with ws_connect(f"wss://{host}/?token={token.group(1).decode()}", sock=raw, subprotocols=["vite-hmr"],
                    ssl=ssl.create_default_context(cafile=ca), open_timeout=15) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "connected"
        (vite_project / "style.css").write_text("body { color: rebeccapurple; }\n")
        while True:  # Vite may send pings or other messages first
            message = json.loads(ws.recv(timeout=20))
            if message["type"] in ("update", "full-reload"):
                break
        if message["type"] == "update":
            assert any(u["path"].endswith("/style.css") for u in message["updates"]), message
    status, _, css = http_get(gotunnel.https_port, host, "/style.css", https_ca=ca)
    assert status == 200 and b"rebeccapurple" in css


def test_vite_host_refusal_is_named_with_its_fix_and_ctrl_c_cleans_up(gotunnel: Gotunnel, running_vite: Any) -> None:
    ca = _ca(gotunnel)
    wait_for(lambda: _page(gotunnel, ca), timeout=90, what="Vite's page through the tunnel")
    port = _backend_port(gotunnel)
    started = gotunnel("start", "-d", "blocked", "-p", str(port), "--host-header", "blocked.example.test", check=True)
    assert ("warning: tunnel 'blocked': the backend (Vite) refuses the Host 'blocked.example.test' (HTTP 403)"
            in started.err)
    assert "server: { allowedHosts: ['.localhost', '.local'] }" in started.err
    status, _, body = http_get(gotunnel.http_port, "blocked.localhost")
    assert status == 403 and b"Blocked request" in body  # what the user would have seen
    doctor = gotunnel("doctor")
    assert "[ok] tunnel viteapp" in doctor.out
    assert "[WARN] tunnel blocked: the backend (Vite) refuses the Host 'blocked.example.test'" in doctor.out
    report = gotunnel.json("doctor")
    assert {t["name"]: [r["framework"] for r in t["refusals"]] for t in report["tunnels"]} == {
        "blocked": ["Vite"], "viteapp": []}
    running_vite.send_signal(signal.SIGINT)  # what Ctrl-C sends (to gotunnel's group when not on a terminal)
    running_vite.wait(30)
    assert [t["name"] for t in gotunnel.json("list")["tunnels"]] == ["blocked"]

    def port_closed() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        return False

    wait_for(port_closed, timeout=20, what="Vite to stop listening")
