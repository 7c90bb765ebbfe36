"""`gotunnel --engine caddy start -d myapp -p PORT` through the real CLI and daemon with a real caddy:
HTTP and HTTPS with gotunnel's CA, no TCP admin port, the daemon killed and restored (its orphaned
caddy stopped), rejected changes, and stop --all leaving no caddy behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from caddy_helpers import caddy_binary, needs_caddy
from gotunnel_core.testing import Gotunnel, pid_gone, wait_for
from gotunnel_core.testing.backends import header_values as header
from gotunnel_core.testing.daemon import http_get, serves, supervisor_record

pytestmark = needs_caddy


@pytest.fixture
def cdy(gotunnel: Gotunnel) -> Gotunnel:
    gotunnel.env["GOTUNNEL_CADDY_BACKOFF"] = "0.1"  # the engine is chosen per test (flag or config file)
    return gotunnel


def record(g: Gotunnel) -> dict[str, Any]:
    return supervisor_record(g, "caddy")


def test_start_serves_http_and_https_and_stop_all_leaves_nothing(cdy: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend("myapp")
    started = cdy("--engine", "caddy", "start", "-d", "myapp", "-p", str(backend.port), check=True)
    assert f"https://myapp.localhost:{cdy.https_port}" in started.out
    ca = cdy("cert", "ca", "--path", check=True).out.strip()
    status, _, body = http_get(cdy.http_port, f"myapp.localhost:{cdy.http_port}", "/hello?x=1")
    echo = json.loads(body)
    assert status == 200 and echo["path"] == "/hello?x=1"
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"] and header(echo, "X-Forwarded-Proto") == ["http"]
    assert header(echo, "X-Forwarded-Host") == [f"myapp.localhost:{cdy.http_port}"]
    status, _, body = http_get(cdy.https_port, "myapp.local", "/secure", https_ca=ca)
    assert status == 200 and header(json.loads(body), "X-Forwarded-Proto") == ["https"]
    curl = subprocess.run(["curl", "-sS", "--cacert", ca, "--resolve", f"myapp.localhost:{cdy.https_port}:127.0.0.1",
                           f"https://myapp.localhost:{cdy.https_port}/via-curl"], capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0 and json.loads(curl.stdout)["path"] == "/via-curl", curl.stderr

    info = cdy.json("status")["engine"]
    assert info["name"] == "caddy" and info["running"] and info["extra"]["version"].startswith("v2.")
    pid = record(cdy)["pid"]
    listening = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {cdy.http_port, cdy.https_port}  # the admin API is a unix socket only
    assert (cdy.state_dir / "engines" / "caddy" / "run" / "admin.sock").is_socket()

    cdy("stop", "--all", check=True)
    wait_for(lambda: pid_gone(pid),
             what="caddy to exit")


def test_caddy_left_by_a_killed_daemon_is_stopped_by_the_next(cdy: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    cdy("--engine", "caddy", "start", "-d", "one", "-p", str(backend.port), check=True)
    orphan = record(cdy)["pid"]
    daemon = cdy.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: pid_gone(daemon),
             what="daemon to die")
    cdy.seen_pids.append(orphan)  # type: ignore[attr-defined]
    assert psutil.pid_exists(orphan) and serves(cdy, "one")  # caddy outlives its daemon (own session)
    cdy("--engine", "caddy", "start", "-d", "two", "-p", str(backend.port), check=True)
    wait_for(lambda: pid_gone(orphan),
             what="the orphaned caddy to be stopped")
    assert record(cdy)["pid"] != orphan and serves(cdy, "one") and serves(cdy, "two")
    assert "stopping an engine left over by a previous daemon" in (cdy.state_dir / "daemon.log").read_text()


def test_refused_change_keeps_serving_and_says_why(cdy: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    cdy("--engine", "caddy", "start", "-d", "one", "-p", str(backend.port), check=True)
    bad = cdy("--engine", "caddy", "start", "-d", "mixed", "--backend", backend.url, "--backend", "https://127.0.0.1:1")
    assert bad.code == 2 and "mixes http and https" in bad.err
    assert [t["name"] for t in cdy.json("list")["tunnels"]] == ["one"] and serves(cdy, "one")


def test_validate_and_render_use_caddy(cdy: Gotunnel, tmp_path: Path) -> None:
    config = tmp_path / "gotunnel.toml"
    config.write_text('engine = "caddy"\n[[tunnels]]\nname = "web"\nbackends = ["http://127.0.0.1:3000"]\n'
                      'headers.request.add = { "X-Env" = "{env.HOME}" }\n')
    ok = cdy("--config", str(config), "validate", check=True)
    assert "valid for engine caddy" in ok.out
    rendered = json.loads(cdy("--config", str(config), "render", check=True).out)
    server_routes = rendered["apps"]["http"]["servers"]["gotunnel_http"]["routes"]
    tunnel = next(r for r in server_routes if "host" in (r.get("match") or [{}])[0])  # after the guard routes
    routes = tunnel["handle"][0]["routes"]
    assert routes[-1]["handle"][-1]["headers"]["request"]["set"]["X-Env"] == ["\\{env.HOME\\}"]
    missing = cdy("--config", str(config), "--engine-bin", "/nonexistent/caddy", "start")
    assert missing.code != 0 and "/nonexistent/caddy" in missing.err
    assert caddy_binary()
