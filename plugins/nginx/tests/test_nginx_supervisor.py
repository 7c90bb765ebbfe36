"""The engine supervisor with a real nginx, through the real CLI and daemon: crash restart with
backoff, giving up, orphan cleanup after a daemon died, pid-reuse safety, rejected configs that
leave the running one in place, graceful stop, and stderr in the daemon log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from typing import Any

import psutil
import pytest

from gotunnel_core.testing import Gotunnel, pid_gone, wait_for
from gotunnel_core.testing.daemon import engine_status, group_alive, http_get, serves, supervisor_record, use_engine

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
pytestmark = pytest.mark.skipif(not NGINX, reason="nginx is not installed (CI installs it)")


@pytest.fixture
def ngx(gotunnel: Gotunnel) -> Gotunnel:
    return use_engine(gotunnel, "nginx", NGINX)


def work_dir(g: Gotunnel) -> Any:
    return g.state_dir / "engines" / "nginx"


def engine_record(g: Gotunnel) -> dict[str, Any]:
    return supervisor_record(g, "nginx")


def test_engine_runs_unprivileged_inside_the_state_dir(ngx: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend("one")
    ngx("start", "-d", "one", "-p", str(backend.port), check=True)
    record = engine_record(ngx)
    master = psutil.Process(record["pid"])
    assert master.ppid() == ngx.daemon_pid()  # a child of the daemon
    assert os.getpgid(master.pid) == master.pid  # in its own process group
    workers = master.children()
    assert workers and all(w.uids().effective == os.geteuid() for w in workers)  # never `nobody`, never more
    cmd = " ".join(master.cmdline())
    assert f"-p {work_dir(ngx)}/" in cmd and f"-c {work_dir(ngx)}/current/nginx.conf" in cmd
    assert (work_dir(ngx) / "run" / "nginx.pid").read_text().strip() == str(master.pid)
    conf = (work_dir(ngx) / "current" / "nginx.conf").read_text()
    assert "access_log off;" in conf and "daemon off;" in conf
    assert serves(ngx, "one")


def test_crashed_engine_is_restarted_with_the_current_routes(ngx: Gotunnel, echo_backend: Any) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    ngx("start", "-d", "one", "-p", str(one.port), check=True)
    ngx("start", "-d", "two", "-p", str(two.port), check=True)
    old = engine_record(ngx)["pid"]
    os.kill(old, signal.SIGKILL)
    status = wait_for(lambda: (s := engine_status(ngx))["running"] and s["extra"]["pid"] != old and s,
                      timeout=20, what="nginx to be restarted")
    assert status["extra"]["restarts"] == 1
    assert not group_alive(old)  # the killed master's workers were cleaned up too
    assert serves(ngx, "one") and serves(ngx, "two")
    ngx("start", "-d", "three", "-p", str(one.port), check=True)  # and it still takes changes
    assert serves(ngx, "three")


def test_engine_that_keeps_crashing_is_given_up_and_reported(ngx: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    ngx.env["GOTUNNEL_NGINX_MAX_CRASHES"] = "2"
    ngx("start", "-d", "one", "-p", str(backend.port), check=True)
    first = engine_record(ngx)["pid"]
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (s := engine_status(ngx))["running"] and s["extra"]["pid"] != first and s["extra"]["pid"],
                      timeout=20, what="first restart")
    os.kill(second, signal.SIGKILL)
    status = wait_for(lambda: (s := engine_status(ngx))["extra"].get("gave_up") and s, timeout=20, what="give-up")
    assert status["running"] is False and "2 crashes within" in status["detail"]
    text = ngx("status", check=True).out
    assert "engine: nginx (not running) gave up: 2 crashes within" in text
    refused = ngx("start", "-d", "other", "-p", str(backend.port))
    assert refused.code == 1 and "engine is down" in refused.err


def test_engine_left_by_a_killed_daemon_is_stopped_by_the_next_daemon(ngx: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    ngx("start", "-d", "one", "-p", str(backend.port), check=True)
    orphan = engine_record(ngx)["pid"]
    daemon = ngx.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: pid_gone(daemon),
             what="daemon to die")
    assert psutil.pid_exists(orphan)  # nginx outlives its daemon (own session) and keeps serving
    ngx.seen_pids.append(orphan)  # type: ignore[attr-defined]
    assert serves(ngx, "one")
    ngx("start", "-d", "two", "-p", str(backend.port), check=True)  # a new daemon restores the tunnels
    wait_for(lambda: not group_alive(orphan), what="the orphaned nginx to be stopped")
    new = engine_record(ngx)["pid"]
    assert new != orphan and serves(ngx, "one") and serves(ngx, "two")
    assert "stopping an engine left over by a previous daemon" in (ngx.state_dir / "daemon.log").read_text()


@pytest.mark.parametrize("mismatch", ["create_time", "argv"])
def test_a_process_that_reuses_the_recorded_pid_is_never_touched(ngx: Gotunnel, echo_backend: Any,
                                                                 mismatch: str) -> None:
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        proc = psutil.Process(stranger.pid)
        record = {"runtime": "process", "pid": stranger.pid, "create_time": proc.create_time(),
                  "argv": ["sleep", "300"]}
        if mismatch == "create_time":
            record["create_time"] -= 3600  # same pid and command, but an older process: not this one
        else:
            record["argv"] = [str(NGINX), "-p", "/somewhere/", "-c", "/somewhere/nginx.conf"]
        ngx.state_dir.mkdir(mode=0o700)
        work_dir(ngx).mkdir(parents=True)
        (work_dir(ngx) / "supervisor.json").write_text(json.dumps(record))
        ngx("start", "-d", "one", "-p", str(echo_backend().port), check=True)
        assert stranger.poll() is None and proc.status() != psutil.STATUS_ZOMBIE
        assert engine_record(ngx)["pid"] != stranger.pid
        assert "not ours" in (ngx.state_dir / "daemon.log").read_text()
    finally:
        stranger.kill()
        stranger.wait()


def test_rejected_config_keeps_the_running_one(ngx: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    ngx("start", "-d", "good", "-p", str(backend.port), check=True)
    current = os.readlink(work_dir(ngx) / "current")
    pid = engine_record(ngx)["pid"]
    bad = ngx("start", "-d", "bad", "--backend", "http://no-such-host.invalid:8080")
    assert bad.code == 2
    assert bad.err.startswith("error: nginx refused the configuration:")
    assert 'host not found in upstream "no-such-host.invalid:8080"' in bad.err  # nginx -t's own words
    assert "the running configuration was kept" in bad.err
    assert os.readlink(work_dir(ngx) / "current") == current
    assert engine_record(ngx)["pid"] == pid and engine_status(ngx)["running"]
    assert serves(ngx, "good")
    assert [t["name"] for t in ngx.json("list")["tunnels"]] == ["good"]
    assert http_get(ngx.http_port, "bad.localhost")[0] == 404


def test_graceful_stop_leaves_no_engine_process(ngx: Gotunnel, echo_backend: Any) -> None:
    ngx("start", "-d", "one", "-p", str(echo_backend().port), check=True)
    pid = engine_record(ngx)["pid"]
    ngx("stop", "--all", check=True)
    assert not group_alive(pid)
    assert not (work_dir(ngx) / "supervisor.json").exists()


def test_engine_stderr_goes_to_the_daemon_log(ngx: Gotunnel) -> None:
    from gotunnel_core.testing import free_port

    ngx("start", "-d", "dead", "-p", str(free_port()), check=True)
    status, _, body = http_get(ngx.http_port, "dead.localhost")
    assert status == 502 and b"dead" in body
    log = ngx.state_dir / "daemon.log"
    wait_for(lambda: "connect() failed" in log.read_text(), what="nginx's error line in the daemon log")


def test_missing_program_fails_start_with_install_hint(ngx: Gotunnel) -> None:
    result = ngx("start", "-d", "one", "-p", "3000", extra_env={"GOTUNNEL_NGINX_BIN": "/nonexistent/nginx"})
    assert result.code == 1
    assert "engine 'nginx' cannot start: its program was not found" in result.err
    assert "apt-get install nginx" in result.err
    engines = ngx.json("engines")["engines"]
    row = next(e for e in engines if e["name"] == "nginx")
    assert row["binary"]["found"] and row["binary"]["version"]
    missing = ngx("engines", extra_env={"GOTUNNEL_NGINX_BIN": "/nonexistent/nginx"}).out
    assert "MISSING" in missing and "apt-get install nginx" in missing


def test_renewed_certificate_is_served_without_a_restart(ngx: Gotunnel, echo_backend: Any) -> None:
    import socket
    import ssl

    ngx("start", "-d", "web", "-p", str(echo_backend().port), check=True)
    ca = ngx("cert", "ca", "--path", check=True).out.strip()

    def served_cert() -> bytes:
        ctx = ssl.create_default_context(cafile=ca)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", ngx.https_port), timeout=10),
                             server_hostname="web.localhost") as sock:
            return sock.getpeercert(binary_form=True)

    pid = engine_record(ngx)["pid"]
    before = served_cert()
    ngx("cert", "renew", "web", check=True)
    assert served_cert() != before
    assert engine_record(ngx)["pid"] == pid  # reloaded, not restarted
