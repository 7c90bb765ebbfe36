"""`gotunnel run` end to end through the real CLI and daemon: a real Python HTTP server that reads
$PORT, signal forwarding to the command's process group, exit codes, port discovery, the name
refusal and `--force`, and bad input. (The real Vite dev server: tests/test_run_vite.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, free_port, pid_gone, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get

PORT_APP = Path(__file__).resolve().parent / "devloop_apps" / "port_app.py"


@dataclass
class Running:
    """A `gotunnel run` in the background: its process and the files its output goes to."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "shop-front"
    directory.mkdir()
    (directory / "package.json").write_text(json.dumps({"name": "@acme/Shop_Front", "scripts": {}}))
    return directory


@pytest.fixture
def start_run(gotunnel: Gotunnel, tmp_path: Path) -> Iterator[Any]:
    """Starts `gotunnel run ARGS` in the background; every one is stopped by pid at teardown (the
    command's process group too, should gotunnel have left it)."""
    started: list[Running] = []

    def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Running:
        index = len(started)
        out, err = tmp_path / f"run{index}.out", tmp_path / f"run{index}.err"
        with out.open("wb") as out_fh, err.open("wb") as err_fh:
            proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "run", *args], cwd=cwd,
                                    env={**os.environ, **gotunnel.env, **(env or {})},
                                    stdin=subprocess.DEVNULL, stdout=out_fh, stderr=err_fh)
        running = Running(proc, out, err)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            stop_pid(running.proc.pid)
            running.proc.wait(10)


def app_pids(log: Path) -> list[int]:
    return [int(line.split()[-1]) for line in log.read_text().splitlines() if "ready" in line] if log.exists() else []


def serves(g: Gotunnel, name: str) -> dict[str, Any] | None:
    try:
        status, _, body = http_get(g.http_port, f"{name}.localhost")
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def tunnel_names(g: Gotunnel) -> list[str]:
    return [t["name"] for t in g.json("list")["tunnels"]]


def test_run_serves_a_python_server_on_port_and_removes_the_tunnel_on_exit(
        gotunnel: Gotunnel, start_run: Any, project: Path) -> None:
    running = start_run("--", sys.executable, str(PORT_APP), cwd=project)
    echo = wait_for(lambda: serves(gotunnel, "shop-front"), timeout=60, what="the tunnel to serve the app")
    assert echo["env_port"] == str(echo["port"]) and echo["env_host"] == "127.0.0.1"
    assert echo["host"] == "shop-front.localhost"  # the Host the client sent (host_header = preserve)
    status, _, body = http_get(gotunnel.https_port, f"shop-front.localhost:{gotunnel.https_port}",
                               https_ca=gotunnel("cert", "ca", "--path", check=True).out.strip())
    assert status == 200 and json.loads(body)["port"] == echo["port"]
    assert http_get(gotunnel.http_port, "shop-front.localhost", "/exit/3")[0] == 200
    assert running.wait() == 3  # the app exited 3: gotunnel exits 3 too
    err = running.stderr()
    assert "tunnel shop-front (from package.json)" in err
    assert f"https://shop-front.localhost:{gotunnel.https_port}" in err
    assert "port_app listening on" in running.stdout()  # the command's output, unchanged
    assert "removed tunnel shop-front" in err
    assert tunnel_names(gotunnel) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signals_reach_the_whole_process_group_and_the_exit_code_follows(
        gotunnel: Gotunnel, start_run: Any, project: Path, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "signals.log"
    running = start_run("-d", "sig", "--", sys.executable, str(PORT_APP), cwd=project,
                        env={"SIGNAL_LOG": str(log), "GRANDCHILD": "1"})
    wait_for(lambda: serves(gotunnel, "sig"), timeout=60, what="the tunnel to serve the app")
    grandchild = wait_for(lambda: app_pids(log), what="the grandchild to be ready")[0]
    running.proc.send_signal(sig)
    assert running.wait() == 10 + sig  # the app exits 10+N on signal N, and so does gotunnel
    received = log.read_text().splitlines()
    assert f"app {sig.name}" in received and f"grandchild {sig.name}" in received, received
    assert received.count(f"app {sig.name}") == 1  # forwarded once, not once per layer
    wait_for(lambda: not _alive(grandchild), what="the grandchild to exit")
    assert tunnel_names(gotunnel) == []


def _alive(pid: int) -> bool:
    return not pid_gone(pid)


def test_a_command_killed_by_a_signal_exits_128_plus_n(gotunnel: Gotunnel, start_run: Any, project: Path) -> None:
    running = start_run("-d", "killed", "--", sys.executable, str(PORT_APP), cwd=project)
    echo = wait_for(lambda: serves(gotunnel, "killed"), timeout=60, what="the tunnel to serve the app")
    os.kill(echo["pid"], signal.SIGKILL)
    assert running.wait() == 128 + signal.SIGKILL
    assert tunnel_names(gotunnel) == []


def test_a_command_that_exits_before_listening_fails_early(gotunnel: Gotunnel, start_run: Any, project: Path) -> None:
    running = start_run("-d", "early", "--", sys.executable, "-c", "import sys; print('bye'); sys.exit(4)",
                        cwd=project)
    assert running.wait() == 4
    assert "exited with status 4 before it listened" in running.stderr() and "bye" in running.stdout()
    assert gotunnel.daemon_pid() is None  # nothing was started for it


def test_port_discovery_when_the_app_ignores_port(gotunnel: Gotunnel, start_run: Any, project: Path) -> None:
    own = free_port()
    running = start_run("-d", "stubborn", "--", sys.executable, str(PORT_APP), cwd=project, env={"APP_PORT": str(own)})
    echo = wait_for(lambda: serves(gotunnel, "stubborn"), timeout=60, what="the tunnel to the discovered port")
    assert echo["port"] == own and echo["env_port"] != str(own)
    assert f"but on {own}" in running.stderr()
    assert gotunnel.json("list")["tunnels"][0]["backends"][0]["url"] == f"http://127.0.0.1:{own}"
    running.proc.send_signal(signal.SIGTERM)
    running.wait()


def test_a_taken_name_is_refused_before_the_command_starts_and_force_replaces_it(
        gotunnel: Gotunnel, start_run: Any, project: Path, tmp_path: Path, echo_backend: Any) -> None:
    other = echo_backend("other")
    gotunnel("start", "-d", "taken", "-p", str(other.port), check=True)
    log = tmp_path / "signals.log"
    refused = start_run("-d", "taken", "--", sys.executable, str(PORT_APP), cwd=project,
                        env={"SIGNAL_LOG": str(log), "GRANDCHILD": "1"})
    assert refused.wait() == 2
    err = refused.stderr()
    assert f"error: tunnel 'taken' is already served by http://127.0.0.1:{other.port}" in err and "--force" in err
    assert not log.exists()  # the command never started
    running = start_run("-d", "taken", "--force", "--", sys.executable, str(PORT_APP), cwd=project)
    echo = wait_for(lambda: (serves(gotunnel, "taken") or {}).get("env_port") and serves(gotunnel, "taken"),
                    timeout=60, what="the forced tunnel to serve the app")
    assert echo["env_port"] == str(echo["port"])
    running.proc.send_signal(signal.SIGTERM)
    running.wait()
    assert tunnel_names(gotunnel) == []  # removed on exit (it was this run's)


def test_exit_leaves_a_tunnel_another_command_replaced(gotunnel: Gotunnel, start_run: Any, project: Path,
                                                       echo_backend: Any) -> None:
    running = start_run("-d", "mine", "--", sys.executable, str(PORT_APP), cwd=project)
    wait_for(lambda: serves(gotunnel, "mine"), timeout=60, what="the tunnel to serve the app")
    other = echo_backend("other")
    refused = gotunnel("start", "-d", "mine", "-p", str(other.port))  # no start takes a name silently (issue 19)
    assert refused.code == 2 and "already served by" in refused.err
    gotunnel("start", "-d", "mine", "-p", str(other.port), "--force", check=True)
    running.proc.send_signal(signal.SIGTERM)
    running.wait()
    assert tunnel_names(gotunnel) == ["mine"]
    assert gotunnel.json("list")["tunnels"][0]["backends"][0]["url"] == other.url


@pytest.mark.parametrize("args, message", [
    ([], "error: missing the command to run"),
    (["--"], "error: missing the command to run"),
    (["-d", "a b", "--", "true"], "error: invalid tunnel name 'a b'"),
    (["--port", "0", "--", "true"], "error: invalid --port 0"),
    (["--host-header", "x y", "--", "true"], "error: invalid host_header 'x y'"),
    (["--ready-timeout", "-1", "--", "true"], "error: Invalid value for '--ready-timeout'"),
    (["--", "/no/such/program-xyz"], "error: command not found: '/no/such/program-xyz'"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_runs(gotunnel: Gotunnel, project: Path, args: list[str],
                                                       message: str) -> None:
    result = gotunnel("run", *args, cwd=project)
    assert result.code == 2, result.err
    assert result.err.startswith(message), result.err
    assert len([line for line in result.err.splitlines() if line.startswith("error:")]) == 1
    assert gotunnel.daemon_pid() is None


def test_ctrl_c_on_a_terminal_goes_to_the_command_which_owns_the_terminal(
        gotunnel: Gotunnel, project: Path, tmp_path: Path) -> None:
    """On a terminal the command's group becomes the foreground group (as a shell does for a job):
    the terminal's Ctrl-C reaches it directly, gotunnel cleans up and exits with its code."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    log = tmp_path / "signals.log"

    def take_terminal() -> None:  # gotunnel's own session, with the pty as its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "run", "-d", "tty", "--", sys.executable,
                             str(PORT_APP)], cwd=project, env={**os.environ, **gotunnel.env, "SIGNAL_LOG": str(log)},
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=take_terminal)
    os.close(slave)
    output = bytearray()

    def read_available() -> None:
        import select

        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            output.extend(chunk)

    try:
        wait_for(lambda: serves(gotunnel, "tty"), timeout=60, what="the tunnel to serve the app")
        echo = serves(gotunnel, "tty")
        assert os.tcgetpgrp(master) == echo["pid"]  # the command's group owns the terminal
        os.write(master, b"\x03")  # Ctrl-C
        assert proc.wait(30) == 10 + signal.SIGINT
        read_available()
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid)
        os.close(master)
    assert log.read_text().splitlines() == ["app SIGINT"]
    assert b"removed tunnel tty" in output
    assert tunnel_names(gotunnel) == []
