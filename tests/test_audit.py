"""The audit log (issue 15): every control operation as a JSON line with the peer's uid and pid
from SO_PEERCRED, owner-only and rotated, read back by `gotunnel audit [--json] [-f]`."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.audit import AuditLog, Peer, read_entries
from gotunnel_core.testing import Gotunnel, stop_pid

REPO = Path(__file__).resolve().parent.parent


def entries(g: Gotunnel) -> list[dict[str, Any]]:
    return [json.loads(line) for line in g("audit", "--json", check=True).out.splitlines()]


def test_control_operations_are_audited_with_the_callers_uid(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    gotunnel("list", check=True)  # read-only: not audited
    assert gotunnel("stop", "nope").code == 1
    gotunnel("stop", "app", check=True)
    got = entries(gotunnel)
    assert [(e["op"], e["result"]) for e in got] == [("start", "ok"), ("stop", "error"), ("stop", "ok")]
    start = got[0]
    assert start["uid"] == os.getuid() and start["source"] == "daemon"
    assert start["pid"] not in (os.getpid(), gotunnel.daemon_pid()) and start["pid"] > 0  # the CLI process
    assert start["args"] == {"tunnels": [{"name": "app", "backends": [backend.url]}]}
    assert "no tunnel named 'nope'" in got[1]["error"]
    path = gotunnel.state_dir / "audit.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    human = gotunnel("audit", check=True).out.splitlines()
    assert len(human) == 3 and "start app -> " + backend.url in human[0] and human[1].endswith("]")


def test_header_values_never_reach_the_audit_log(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    (gotunnel.state_dir.parent / "gotunnel.toml").write_text(
        f'[[tunnels]]\nname = "sec"\nbackends = ["{backend.url}"]\n'
        'headers.request.add = { "Authorization" = "Bearer s3cr3t-token" }\n')
    gotunnel("start", check=True)
    assert "s3cr3t-token" not in (gotunnel.state_dir / "audit.jsonl").read_text()


def test_rotation_keeps_owner_only_files_and_reads_oldest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=400, backups=2)
    for i in range(12):
        log.record("stop", {"names": [f"t{i}"]}, ok=True, peer=Peer(pid=10, uid=1000, gid=1000))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in tmp_path.iterdir())
    names = [e["args"]["names"][0] for e in read_entries(tmp_path / "audit.jsonl")]
    assert names == sorted(names, key=lambda n: int(n[1:])) and names[-1] == "t11" and len(names) < 12
    assert {e["uid"] for e in read_entries(tmp_path / "audit.jsonl")} == {1000}


def test_audit_follow_prints_new_entries(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "one", "-p", str(backend.port), check=True)
    env = {**os.environ, **gotunnel.env}
    follower = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "audit", "--json", "-f", "-n", "1"],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=gotunnel.state_dir.parent)
    try:
        assert json.loads(follower.stdout.readline())["args"]["tunnels"][0]["name"] == "one"  # type: ignore[union-attr]
        gotunnel("start", "-d", "two", "-p", str(backend.port), check=True)
        line = follower.stdout.readline()  # type: ignore[union-attr]
        entry = json.loads(line)
        assert entry["op"] == "start" and entry["args"]["tunnels"][0]["name"] == "two"
    finally:
        stop_pid(follower.pid)
        follower.wait()


# ----- a second user (root only) ----------------------------------------------------------------

@pytest.fixture
def second_user() -> Iterator[pwd.struct_passwd]:
    """A throw-away system user created for this test, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user")
    if shutil.which("useradd") is None and not Path("/usr/sbin/useradd").exists():
        pytest.skip("needs useradd (passwd package)")
    name = f"gtaudit{secrets.token_hex(3)}"
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    try:
        yield pwd.getpwnam(name)
    finally:
        userdel = shutil.which("userdel") or "/usr/sbin/userdel"
        subprocess.run([userdel, name], capture_output=True, timeout=30)


#: A minimal daemon client run as the second user by the system's Python (it needs no access to
#: this checkout): one request line, one response line, as `DaemonClient` does.
_CLIENT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sock.sendall(json.dumps({"op": "stop", "args": {"names": [sys.argv[2]]}}).encode() + b"\\n")
print(sock.makefile().readline().strip())
"""


@pytest.mark.root
def test_audit_entries_carry_each_callers_uid(gotunnel: Gotunnel, echo_backend: Any,
                                              second_user: pwd.struct_passwd) -> None:
    """Root starts a tunnel; the second user stops it over the daemon socket (opened to it for this
    test only): each entry names its caller's uid and pid as the kernel reports them."""
    backend = echo_backend()
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    socket_path = gotunnel.state_dir / "daemon.sock"
    for directory in (gotunnel.state_dir.parent, gotunnel.state_dir):
        os.chmod(directory, 0o711)  # let the second user reach the socket (the test's doing, not gotunnel's)
    os.chmod(socket_path, 0o666)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    client = subprocess.run([python, "-c", _CLIENT, str(socket_path), "app"], capture_output=True, text=True,
                            timeout=60, user=second_user.pw_uid, group=second_user.pw_gid, extra_groups=[])
    assert client.returncode == 0 and json.loads(client.stdout)["ok"], client.stderr
    got = entries(gotunnel)
    assert [(e["op"], e["uid"], e["result"]) for e in got] == [("start", 0, "ok"), ("stop", second_user.pw_uid, "ok")]
    assert got[1]["args"] == {"names": ["app"]} and got[1]["pid"] > 0
    assert f"{second_user.pw_name}({second_user.pw_uid})" in gotunnel("audit", check=True).out
