"""The user's side of the port broker: is it there, and the listening sockets for the daemon."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RuntimeFailure
from ..models import Listen
from .layout import HTTP_PORT, HTTPS_PORT, broker_socket

if TYPE_CHECKING:
    from ..supervisor.listeners import ListenerSockets

ENABLE_HINT = "sudo gotunnel ports enable   (lets your daemon serve on 80/443; see docs/ports.md)"


def ask(request: str, uid: int | None = None, timeout: float = 2.0) -> tuple[dict[str, Any], list[int]] | None:
    """Send `ping` or `sockets` to the user's broker: (its answer, received descriptors), or None
    when no broker answers."""
    path = broker_socket(os.getuid() if uid is None else uid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(request.encode() + b"\n")
        data, fds, _, _ = socket.recv_fds(sock, 4096, 16)
    except OSError:
        return None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        for fd in fds:
            os.close(fd)
        return None
    return answer, fds


def broker_info(uid: int | None = None) -> dict[str, Any] | None:
    """The broker's `ping` answer (pid, bind, ports) when it serves this user, else None."""
    if not broker_socket(os.getuid() if uid is None else uid).exists():
        return None
    result = ask("ping", uid)
    return result[0] if result is not None and result[0].get("ok") else None


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind (Linux sysctl; 1024 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def needs_broker(listen: Listen) -> bool:
    """Whether this process cannot bind `listen`'s ports itself."""
    return os.geteuid() != 0 and min(listen.http_port, listen.https_port) < unprivileged_port_start()


def receive_listeners(listen: Listen) -> ListenerSockets | None:
    """The broker's listening sockets for `listen` as `ListenerSockets`, or None when this process
    can bind the ports itself. RuntimeFailure (with the fix) when it cannot and no broker fits."""
    from ..supervisor.listeners import ListenerSockets

    if not needs_broker(listen):
        return None
    wanted = f"{listen.bind} ports {listen.http_port}/{listen.https_port}"
    result = ask("sockets")
    if result is None:
        raise RuntimeFailure(f"cannot listen on {wanted}: ports below {unprivileged_port_start()} need root, "
                             "and no port broker answers for this user", hint=ENABLE_HINT)
    answer, fds = result
    socks = [socket.socket(fileno=fd) for fd in fds]
    if not answer.get("ok") or (answer.get("bind"), sorted(set(answer.get("ports", [])))) != (
            listen.bind, sorted({listen.http_port, listen.https_port})):
        for sock in socks:
            sock.close()
        raise RuntimeFailure(f"cannot listen on {wanted}: the port broker holds "
                             f"{answer.get('bind')} ports {sorted(set(answer.get('ports', [])))}",
                             hint=f"use --bind {answer.get('bind')} with ports {HTTP_PORT}/{HTTPS_PORT}, or "
                                  f"sudo gotunnel ports enable --bind {listen.bind}")
    sides: dict[int, list[socket.socket]] = {}
    for port, sock in zip(answer["ports"], socks):
        sides.setdefault(int(port), []).append(sock)
    return ListenerSockets.adopt(listen, sides)


def standard_port_defaults(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Make 80/443 (and the broker's address) the defaults when the user's broker serves them:
    printed URLs then carry no port. Explicitly set ports, or another explicit address, win."""
    if sources.get("http_port") != "default" or sources.get("https_port") != "default":
        return
    info = broker_info()
    if info is None or (sources.get("bind") != "default" and info.get("bind") != values.get("bind")):
        return
    values.update(http_port=HTTP_PORT, https_port=HTTPS_PORT, bind=info["bind"])
    for key in ("http_port", "https_port", "bind"):
        if sources.get(key) == "default":
            sources[key] = "gotunnel ports enable"
