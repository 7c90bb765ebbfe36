"""`sudo gotunnel ports enable|disable` and `gotunnel ports status`: installing the port broker for
one user, recording exactly what was installed, and removing exactly that.

Three ways to start the broker (see docs/ports.md for why):
- `systemd` (Linux with systemd): a socket unit binds the ports as root, the service runs the broker
  as the user (`User=`) with those sockets; both start at boot.
- `launchd` (macOS): a LaunchDaemon whose `Sockets` launchd binds, run as the user (`UserName`).
- `process` (no service manager): `enable` itself binds the ports and starts the broker as the user,
  with the sockets inherited; it lasts until `disable` or a reboot.
In every case no gotunnel code runs as root after `enable` returns, and the root part is only the bind.
"""

from __future__ import annotations

import json
import os
import plistlib
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import PermissionProblem, RuntimeFailure, UsageError
from ..fsutil import atomic_write
from ..models import Listen, parse_bind
from .layout import HTTP_PORT, HTTPS_PORT, RECORD_DIR, RUN_ROOT, broker_socket, record_file, run_dir

SYSTEMD_DIR = Path("/etc/systemd/system")
LAUNCHD_DIR = Path("/Library/LaunchDaemons")
READY_DEADLINE = 15.0


def target_user(explicit: str | None) -> pwd.struct_passwd:
    """The user whose daemon gets the ports: --user, else the one who ran sudo. Never root."""
    name = explicit or os.environ.get("SUDO_USER")
    if not name:
        raise UsageError("name the user whose daemon gets ports 80/443", hint="sudo gotunnel ports enable (as that "
                                                                            "user), or --user NAME")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"invalid user {name!r}: no such user") from None
    if entry.pw_uid == 0:
        raise UsageError(f"invalid user {name!r}: root binds low ports itself; the broker is for an unprivileged user")
    return entry


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise PermissionProblem(f"`gotunnel ports {action}` needs root", hint=f"sudo gotunnel ports {action}")


def service_manager() -> str:
    """`systemd`, `launchd` or `process` (see the module docstring)."""
    if sys.platform == "darwin":
        return "launchd"
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        return "systemd"
    return "process"


def read_record(user: str) -> dict[str, Any] | None:
    try:
        return json.loads(record_file(user).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"the install record {record_file(user)} is unreadable: {exc}") from None


def _write_record(record: dict[str, Any]) -> None:
    record.setdefault("record_dirs", [])
    for directory in (RECORD_DIR.parent, RECORD_DIR):
        if not directory.exists():
            directory.mkdir(mode=0o755)
            record["record_dirs"].append(str(directory))
    atomic_write(record_file(record["user"]), json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o644)


def _make_dirs(user: pwd.struct_passwd, created: list[str]) -> Path:
    """RUN_ROOT (root, 0755) and the user's run directory (the user's, 0700); notes what it made."""
    for directory in (RUN_ROOT.parent, RUN_ROOT):
        if not directory.exists():
            directory.mkdir(mode=0o755)
            created.append(str(directory))
    os.chmod(RUN_ROOT, 0o755)
    mine = run_dir(user.pw_uid)
    if mine.is_symlink() or (mine.exists() and not mine.is_dir()):
        raise RuntimeFailure(f"{mine} exists and is not a directory; remove it first")
    if not mine.exists():
        mine.mkdir(mode=0o700)
        created.append(str(mine))
    os.chown(mine, user.pw_uid, user.pw_gid)
    os.chmod(mine, 0o700)
    return mine


def enable(user_name: str | None, bind: str) -> dict[str, Any]:
    """Install and start the broker for the user; returns the record. Idempotent for the same bind."""
    require_root("enable")
    user = target_user(user_name)
    bind = parse_bind(bind)
    existing = read_record(user.pw_name)
    if existing is not None:
        if existing["bind"] == bind and _broker_alive(existing):
            return {**existing, "already": True}
        raise RuntimeFailure(f"ports are already enabled for {user.pw_name} ({existing['mode']}, {existing['bind']})",
                             hint="sudo gotunnel ports disable first")
    from ..supervisor.listeners import ListenerSockets

    listen = Listen(bind, HTTP_PORT, HTTPS_PORT)
    probe = ListenerSockets(listen, steer=False)  # fails now, naming the port, when something holds it
    probe.close()
    mode = service_manager()
    record: dict[str, Any] = {"user": user.pw_name, "uid": user.pw_uid, "mode": mode, "bind": bind,
                              "ports": [HTTP_PORT, HTTPS_PORT], "created": [], "files": [], "units": [],
                              "enabled_at": time.time()}
    try:
        if mode == "process":
            _enable_process(user, listen, record)
        elif mode == "systemd":
            _enable_systemd(user, bind, record)
        else:
            _enable_launchd(user, bind, record)
        _wait_for_broker(user.pw_uid)
    except BaseException:
        _undo(record)
        raise
    _write_record(record)
    return record


def broker_argv() -> list[str]:
    return [sys.executable, "-m", "gotunnel_core.ports.broker"]


def _enable_process(user: pwd.struct_passwd, listen: Listen, record: dict[str, Any]) -> None:
    from ..supervisor.listeners import ListenerSockets

    directory = _make_dirs(user, record["created"])
    sockets = ListenerSockets(listen)
    try:
        fds = [fd for port in (listen.http_port, listen.https_port) for fd in _side_fds(sockets, port)]
        log_path = directory / "broker.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchown(log_fd, user.pw_uid, user.pw_gid)
        env = {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "LANG": "C.UTF-8",
               "GOTUNNEL_PORT_FDS": ",".join(str(fd) for fd in fds)}
        try:
            proc = subprocess.Popen(broker_argv(), pass_fds=fds, env=env, cwd=str(directory), stdin=subprocess.DEVNULL,
                                    stdout=log_fd, stderr=log_fd, start_new_session=True,
                                    user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        except OSError as exc:  # e.g. this Python lives under root's private home
            raise RuntimeFailure(f"cannot start the port broker as {user.pw_name}: {exc.strerror}: {sys.executable}",
                                 hint=f"install gotunnel where {user.pw_name} can run it (as that user, e.g. with pipx)") from None
        finally:
            os.close(log_fd)
    finally:
        sockets.close()  # the broker holds them now
    import psutil

    record.update(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(), argv=broker_argv(),
                  persistent=False)


def _side_fds(sockets: Any, port: int) -> list[int]:
    return [sockets.port_fds(side)[port] for side in ((0, 1) if sockets.steerable else (0,))]


def _unit_name(user: str) -> str:
    return f"gotunnel-ports-{user}"


def systemd_units(user: pwd.struct_passwd, bind: str) -> dict[str, str]:
    """The socket and service unit files (name -> text) for the user."""
    name = _unit_name(user.pw_name)
    host = f"[{bind}]" if ":" in bind else bind
    socket_unit = (f"[Unit]\nDescription=gotunnel: ports {HTTP_PORT} and {HTTPS_PORT} for {user.pw_name}'s daemon\n\n"
                   f"[Socket]\nListenStream={host}:{HTTP_PORT}\nListenStream={host}:{HTTPS_PORT}\n"
                   f"Service={name}.service\n\n[Install]\nWantedBy=sockets.target\n")
    service_unit = (f"[Unit]\nDescription=gotunnel port broker for {user.pw_name}\nRequires={name}.socket\n"
                    f"After={name}.socket\n\n"
                    f"[Service]\nUser={user.pw_name}\nExecStart={' '.join(broker_argv())}\nSockets={name}.socket\n"
                    f"RuntimeDirectory=gotunnel/{user.pw_uid}\nRuntimeDirectoryMode=0700\nNoNewPrivileges=yes\n"
                    f"Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n")
    return {f"{name}.socket": socket_unit, f"{name}.service": service_unit}


def _enable_systemd(user: pwd.struct_passwd, bind: str, record: dict[str, Any]) -> None:
    units = systemd_units(user, bind)
    for file_name, text in units.items():
        path = SYSTEMD_DIR / file_name
        atomic_write(path, text, mode=0o644)
        record["files"].append(str(path))
    _run(["systemctl", "daemon-reload"])
    _run(["systemctl", "enable", "--now", *units])
    record["units"] = list(units)
    record["persistent"] = True


def launchd_plist(user: pwd.struct_passwd, bind: str) -> tuple[str, bytes]:
    """(label, plist bytes) of the LaunchDaemon for the user."""
    label = f"dev.gotunnel.ports.{user.pw_name}"
    sockets = {name: {"SockNodeName": bind, "SockServiceName": str(port), "SockType": "stream",
                      "SockFamily": "IPv6" if ":" in bind else "IPv4"}
               for name, port in (("http", HTTP_PORT), ("https", HTTPS_PORT))}
    plist = {"Label": label, "UserName": user.pw_name, "ProgramArguments": broker_argv(), "Sockets": sockets,
             "RunAtLoad": True, "KeepAlive": True, "StandardErrorPath": str(run_dir(user.pw_uid) / "broker.log")}
    return label, plistlib.dumps(plist)


def _enable_launchd(user: pwd.struct_passwd, bind: str, record: dict[str, Any]) -> None:
    _make_dirs(user, record["created"])
    label, data = launchd_plist(user, bind)
    path = LAUNCHD_DIR / f"{label}.plist"
    atomic_write(path, data.decode(), mode=0o644)
    record["files"].append(str(path))
    _run(["launchctl", "bootstrap", "system", str(path)])
    record["units"] = [label]
    record["persistent"] = True


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeFailure(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")


def _wait_for_broker(uid: int) -> None:
    """Until the broker answers on its socket (it refuses root's connection, which proves it runs)."""
    from .client import ask

    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if broker_socket(uid).exists() and ask("ping", uid) is not None:
            return
        time.sleep(0.05)
    raise RuntimeFailure(f"the port broker did not come up within {READY_DEADLINE:g} s",
                         hint=f"see {run_dir(uid) / 'broker.log'} (or `journalctl -u gotunnel-ports-*`)")


def _broker_alive(record: dict[str, Any]) -> bool:
    from .client import ask

    return ask("ping", int(record["uid"])) is not None


def _stop_recorded_process(record: dict[str, Any]) -> str:
    """SIGTERM the recorded broker if (and only if) pid, create time and command line still match."""
    import psutil

    if "pid" not in record:
        return "none"
    try:
        proc = psutil.Process(int(record["pid"]))
        same = abs(proc.create_time() - float(record["create_time"])) < 0.05 and proc.cmdline() == record["argv"]
    except psutil.NoSuchProcess:
        return "gone"
    if not same:
        return "not ours"
    proc.terminate()
    try:
        proc.wait(10)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return "stopped"


def _undo(record: dict[str, Any]) -> list[str]:
    """Remove what `record` says was installed, in reverse; what was done, for the user."""
    done: list[str] = []
    if record.get("mode") == "process":
        done.append(f"broker {record.get('pid', '?')}: {_stop_recorded_process(record)}")
    elif record.get("mode") == "systemd" and record.get("units"):
        subprocess.run(["systemctl", "disable", "--now", *record["units"]], capture_output=True, timeout=60)
        done.append(f"stopped and disabled {', '.join(record['units'])}")
    elif record.get("mode") == "launchd" and record.get("units"):
        subprocess.run(["launchctl", "bootout", f"system/{record['units'][0]}"], capture_output=True, timeout=60)
        done.append(f"unloaded {record['units'][0]}")
    for path in record.get("files", []):
        try:
            os.unlink(path)
            done.append(f"removed {path}")
        except FileNotFoundError:
            pass
    if record.get("mode") == "systemd" and record.get("files"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, timeout=60)
    socket_path = broker_socket(int(record["uid"])) if "uid" in record else None
    for directory in reversed(record.get("created", [])):
        if socket_path is not None and Path(directory) == socket_path.parent:
            shutil.rmtree(directory, ignore_errors=True)  # the broker's socket and log
        else:
            try:
                os.rmdir(directory)
            except OSError:
                continue  # not empty: someone else's too
        done.append(f"removed {directory}")
    return done


def disable(user_name: str | None) -> list[str]:
    """Remove exactly what `enable` recorded for the user; what was removed."""
    require_root("disable")
    user = target_user(user_name)
    record = read_record(user.pw_name)
    if record is None:
        return []
    done = _undo(record)
    record_file(user.pw_name).unlink()
    done.append(f"removed {record_file(user.pw_name)}")
    for directory in reversed(record.get("record_dirs", [])):
        try:
            os.rmdir(directory)  # only when no other user's record is left in it
            done.append(f"removed {directory}")
        except OSError:
            break
    return done


def status(user_name: str | None) -> dict[str, Any]:
    """The record (if any) and whether the broker answers, for the user (default: the invoking one)."""
    from .client import ask

    name = user_name or os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"invalid user {name!r}: no such user") from None
    record = read_record(name)
    answer = ask("ping", entry.pw_uid)
    info = answer[0] if answer is not None else None
    return {"user": name, "enabled": record is not None, "record": record,
            "broker": {"answers": info is not None, "serves_you": bool(info and info.get("ok")),
                       "pid": info.get("pid") if info else None, "socket": str(broker_socket(entry.pw_uid))}}
