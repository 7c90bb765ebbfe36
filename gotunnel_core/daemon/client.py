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

from ..errors import RuntimeFailure
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


def _output_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])


def ensure_daemon(layout: StateLayout, argv: Sequence[str], deadline: float = 30.0) -> DaemonClient:
    """Return a client for a running daemon, spawning one with `argv` if none is alive.

    A file lock serialises concurrent CLI processes so exactly one spawns; a stale socket or
    pid file left by a killed daemon is detected through the daemon lock and ignored.
    """
    client = DaemonClient(layout)
    if client.ping() is not None:
        return client
    with FileLock(str(layout.spawn_lock), timeout=deadline + 30):
        if client.ping() is not None:
            return client
        process: subprocess.Popen[bytes] | None = None
        if not daemon_alive(layout):
            with open(layout.daemon_output, "ab") as out:
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
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if client.ping() is not None:
                return client
            if process is not None and process.poll() is not None:
                tail = _output_tail(layout.daemon_output)
                lines = tail.splitlines()
                # The daemon's own one-line error (a hint may follow it), else its last line.
                errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
                last = errors[-1] if errors else lines[-1] if lines else f"exit code {process.returncode}"
                raise RuntimeFailure(f"the daemon failed to start: {last}", hint=f"full output: {layout.daemon_output}")
            time.sleep(0.05)
        raise RuntimeFailure(f"the daemon did not answer within {deadline:g} s", hint="see `gotunnel logs`")
