"""The HAProxy engine through the real CLI and daemon: its processes, seamless reloads (old
workers stop listening before a change returns, and finish what they were serving), crash
restart, refused configs, certificate renewal, a daemon killed mid-run, graceful stop, and how
it shows in `gotunnel engines`."""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

import psutil
import pytest

from gotunnel_core.testing import Gotunnel, free_port, pid_gone, wait_for
from gotunnel_core.testing.daemon import engine_status, group_alive, http_get, serves, supervisor_record, use_engine
from gotunnel_haproxy.engine import HAProxyEngine
from gotunnel_haproxy.listening import listens_on

HAPROXY = HAProxyEngine.probe({}).path
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (CI installs it)")


@pytest.fixture
def hap(gotunnel: Gotunnel) -> Gotunnel:
    return use_engine(gotunnel, "haproxy", HAPROXY)


def master_pid(g: Gotunnel) -> int:
    return int(supervisor_record(g, "haproxy")["pid"])


def workers(g: Gotunnel) -> list[int]:
    alive = []
    for child in psutil.Process(master_pid(g)).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_master_and_worker_run_on_the_current_generation(hap: Gotunnel, echo_backend: Any) -> None:
    hap("start", "-d", "one", "-p", str(echo_backend().port), check=True)
    work = hap.state_dir / "engines" / "haproxy"
    master = psutil.Process(master_pid(hap))
    assert master.ppid() == hap.daemon_pid() and os.getpgid(master.pid) == master.pid  # the daemon's, own group
    assert master.cmdline()[1:] == ["-W", "-S", str(work / "run" / "master.sock"), "-C", str(work / "current"),
                                    "-f", "haproxy.cfg"]
    assert master.cwd() == os.path.realpath(work / "current")  # -C: config paths are the generation's files
    assert len(workers(hap)) == 1
    assert (work / "current" / "generation.txt").read_text().strip() == str(engine_status(hap)["extra"]["generation"])
    assert serves(hap, "one")


class HeldResponse:
    """A backend that answers one request with its head and a first chunk, then holds the rest
    until `release()`: a response in flight for as long as a test needs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                head += chunk
            if not head.endswith(b"\r\n\r\n"):
                conn.close()  # a TCP probe (the daemon's backend health check) that sent no request
                continue
            if b"gotunnel-hostcheck" not in head:
                break
            # The Host check `start` makes goes straight to the backend: answered, not held.
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            self.released.wait(30)
            conn.sendall(b"5\r\nlast\n\r\n0\r\n\r\n")

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.listener.close()
        self.thread.join(5)


def test_a_change_returns_once_old_workers_stopped_listening_and_they_finish_their_requests(
        hap: Gotunnel, echo_backend: Any) -> None:
    from gotunnel_core.testing.backends import connect

    held = HeldResponse()
    try:
        hap("start", "-d", "held", "-p", str(held.port), check=True)
        master, (old,) = master_pid(hap), workers(hap)
        sock = connect(hap.http_port, None, None)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: held.localhost\r\n\r\n")
        data = b""
        while b"first" not in data:
            data += sock.recv(65536)
        hap("start", "-d", "new", "-p", str(echo_backend().port), check=True)
        # Returned: the old worker no longer listens (a new connection can only meet the new routes),
        # but it lives on, draining the response in flight.
        assert not listens_on(old, {hap.http_port, hap.https_port})
        assert http_get(hap.http_port, "new.localhost")[0] == 200
        assert master_pid(hap) == master and old in workers(hap) and len(workers(hap)) == 2
        held.release()
        while b"0\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        sock.close()
        assert b"last" in data  # the old worker finished it ...
        wait_for(lambda: old not in workers(hap), timeout=20, what="the old worker to exit")  # ... then left
    finally:
        held.close()


def test_crashed_haproxy_is_restarted_with_the_current_routes(hap: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    hap("start", "-d", "one", "-p", str(backend.port), check=True)
    hap("start", "-d", "two", "-p", str(backend.port), check=True)
    old = master_pid(hap)
    os.kill(old, signal.SIGKILL)
    status = wait_for(lambda: (s := engine_status(hap))["running"] and s["extra"]["pid"] != old and s,
                      timeout=20, what="haproxy to be restarted")
    assert status["extra"]["restarts"] == 1
    wait_for(lambda: not group_alive(old), what="the killed master's worker to go")
    assert serves(hap, "one") and serves(hap, "two")


def test_a_refused_config_keeps_the_running_one(hap: Gotunnel, echo_backend: Any) -> None:
    hap("start", "-d", "good", "-p", str(echo_backend().port), check=True)
    work = hap.state_dir / "engines" / "haproxy"
    current, master, worker = os.readlink(work / "current"), master_pid(hap), workers(hap)
    bad = hap("start", "-d", "bad", "--backend", "http://no-such-host.invalid:8080")
    assert bad.code == 2
    assert bad.err.startswith("error: haproxy refused the configuration: [haproxy.cfg:")
    assert "could not resolve address 'no-such-host.invalid'" in bad.err  # haproxy -c's own words, one line
    assert "[NOTICE]" not in bad.err and "the running configuration was kept" in bad.err
    assert os.readlink(work / "current") == current and master_pid(hap) == master and workers(hap) == worker
    assert serves(hap, "good") and http_get(hap.http_port, "bad.localhost")[0] == 404


def test_renewed_certificate_is_served_after_a_reload_not_a_restart(hap: Gotunnel, echo_backend: Any) -> None:
    import ssl

    hap("start", "-d", "web", "-p", str(echo_backend().port), check=True)
    ca = hap("cert", "ca", "--path", check=True).out.strip()

    def served_cert() -> bytes:
        ctx = ssl.create_default_context(cafile=ca)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", hap.https_port), timeout=10),
                             server_hostname="web.localhost") as sock:
            cert = sock.getpeercert(binary_form=True)
            assert cert is not None
            return cert

    master, before = master_pid(hap), served_cert()
    hap("cert", "renew", "web", check=True)
    assert served_cert() != before and master_pid(hap) == master


def test_haproxy_left_by_a_killed_daemon_is_stopped_by_the_next_one(hap: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    hap("start", "-d", "one", "-p", str(backend.port), check=True)
    hap("start", "-d", "two", "-p", str(backend.port), check=True)  # a reload: the master re-executed itself
    orphan, daemon = master_pid(hap), hap.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: pid_gone(daemon),
             what="the daemon to die")
    hap.seen_pids.append(orphan)
    assert serves(hap, "one")  # HAProxy outlives its daemon and keeps serving
    hap("start", "-d", "three", "-p", str(backend.port), check=True)
    wait_for(lambda: not group_alive(orphan), what="the orphaned haproxy to be stopped")
    assert master_pid(hap) != orphan and serves(hap, "one") and serves(hap, "three")
    assert "stopping an engine left over by a previous daemon" in (hap.state_dir / "daemon.log").read_text()


def test_graceful_stop_right_after_a_change_leaves_no_process(hap: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    hap("start", "-d", "one", "-p", str(backend.port), check=True)
    hap("start", "-d", "two", "-p", str(backend.port), check=True)
    master = master_pid(hap)
    hap("stop", "--all", check=True)
    assert not group_alive(master)
    # A soft stop, not the SIGKILL after the deadline: HAProxy 2.6 loses a signal sent while its
    # master settles after a reload, so a change returns only once the master answers its CLI.
    assert "did not stop in time" not in (hap.state_dir / "daemon.log").read_text()
    assert not (hap.state_dir / "engines" / "haproxy" / "supervisor.json").exists()


def test_engines_lists_haproxy_and_a_missing_program_says_how_to_install_it(hap: Gotunnel) -> None:
    row = next(e for e in hap.json("engines")["engines"] if e["name"] == "haproxy")
    assert row["binary"]["found"] and row["binary"]["version"].startswith(("2.", "3."))
    missing = hap("start", "-d", "one", "-p", str(free_port()), extra_env={"GOTUNNEL_HAPROXY_BIN": "/nonexistent/haproxy"})
    assert missing.code == 1 and "apt-get install haproxy" in missing.err
    options = hap("config", "show", check=True).out
    assert "GOTUNNEL_HAPROXY_THREADS" in options and "GOTUNNEL_HAPROXY_MAXCONN" in options
    bad = hap("start", "-d", "one", "-p", "3000", extra_env={"GOTUNNEL_HAPROXY_THREADS": "0"})
    assert bad.code == 2 and "GOTUNNEL_HAPROXY_THREADS" in bad.err
