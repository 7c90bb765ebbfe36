"""The CLI side of the daemon API: connect, send one request, and spawn a daemon when none runs.

Kept free of heavy imports (no asyncio, jinja2, cryptography) so `gotunnel list` stays fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from filelock import FileLock

from ..errors import GotunnelError, RuntimeFailure, UsageError
from ..paths import StateLayout
from .protocol import MAX_MESSAGE, encode, raise_for_response


class DaemonNotRunning(RuntimeFailure):
    """No daemon answers on the socket."""


def daemon_alive(layout: StateLayout) -> bool:
    """True while some daemon holds the daemon lock (it is released when the daemon dies, even by SIGKILL)."""
    try:
        fd = os.open(layout.daemon_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class DaemonClient:
    """Sends requests to the daemon over its unix socket, one connection per request."""

    def __init__(self, layout: StateLayout, timeout: float = 120.0) -> None:
        self.layout = layout
        self.timeout = timeout

    def request(self, op: str, **args: Any) -> Any:
        """Send `op` with `args`; return its result or raise the daemon's error (with its exit code)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.layout.socket))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise DaemonNotRunning(f"no gotunnel daemon answers on {self.layout.socket} ({exc.strerror})") from None
            sock.sendall(encode({"op": op, "args": args}))
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_MESSAGE:
                    raise RuntimeFailure("daemon response too large")
        except socket.timeout:
            raise RuntimeFailure(f"the daemon did not answer {op!r} within {self.timeout:g} s",
                                 hint="see `gotunnel logs`") from None
        except ConnectionResetError:
            raise RuntimeFailure(f"the daemon closed the connection during {op!r}", hint="see `gotunnel logs`") from None
        finally:
            sock.close()
        if not data:
            raise RuntimeFailure(f"the daemon closed the connection during {op!r}", hint="see `gotunnel logs`")
        return raise_for_response(json.loads(data))

    def ping(self) -> dict[str, Any] | None:
        """The daemon's identity (pid, settings), or None if none answers."""
        try:
            return self.request("ping")
        except DaemonNotRunning:
            return None


def startup_failure(path: Path, returncode: int | None) -> GotunnelError:
    """The error a daemon that exited while starting reported: its `error:` line and `hint:` line
    (the CLI error contract), not merely the last line of its output."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()[-40:]
    except OSError:
        lines = []
    message = hint = None
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("error: "):
            message = lines[index][len("error: "):]
            following = lines[index + 1] if index + 1 < len(lines) else ""
            hint = following[len("hint: "):] if following.startswith("hint: ") else None
            break
    if message is None:
        message = lines[-1] if lines else f"exit code {returncode}"
    hint = f"{hint} (full output: {path})" if hint else f"full output: {path}"
    cls = UsageError if returncode == 2 else RuntimeFailure
    return cls(f"the daemon failed to start: {message}", hint=hint)


def ensure_daemon(layout: StateLayout, argv: Sequence[str], deadline: float = 30.0) -> DaemonClient:
    """Return a client for a serving daemon, spawning one with `argv` if none is alive.

    A file lock serialises concurrent CLI processes so exactly one spawns; a stale socket or
    pid file left by a killed daemon is detected through the daemon lock and ignored; a daemon
    that is shutting down (`stop --all`) is waited for, then replaced. Each spawned daemon's
    output starts a fresh `daemon.out`.
    """
    client = DaemonClient(layout)
    if serving(client.ping()):
        return client
    with FileLock(str(layout.spawn_lock), timeout=deadline + 30):
        process: subprocess.Popen[bytes] | None = None
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if serving(client.ping()):
                return client
            if process is None and not daemon_alive(layout):
                with open(layout.daemon_output, "wb") as out:
                    os.chmod(layout.daemon_output, 0o600)
                    process = subprocess.Popen(
                        list(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                        cwd=str(layout.root),
                        close_fds=True,
                    )
            elif process is not None and process.poll() is not None:
                raise startup_failure(layout.daemon_output, process.returncode)
            time.sleep(0.05)
        raise RuntimeFailure(f"the daemon did not answer within {deadline:g} s", hint="see `gotunnel logs`")


def serving(info: dict[str, Any] | None) -> bool:
    """Whether a `ping` answer comes from a daemon that takes requests (not one shutting down)."""
    return info is not None and not info.get("stopping")
