"""Shared fixtures: free ports, private state dirs, a real echo backend, and a `gotunnel` runner
whose daemons are always stopped by pid at teardown. mDNS is off for every daemon started here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """With GOTUNNEL_RUNTIME=docker the external engines run in containers: build their images
    here (no image can be pulled) and point GOTUNNEL_<ENGINE>_IMAGE at them, before any test
    module asks which engines are installed."""
    if os.environ.get("GOTUNNEL_RUNTIME", "").lower() == "docker":
        from docker_helpers import use_docker_runtime_images

        try:
            use_docker_runtime_images()
        except BaseException as exc:  # noqa: BLE001 - pytest.skip outside a test: Docker is missing
            print(f"GOTUNNEL_RUNTIME=docker, but the engine images could not be built: {exc}", file=sys.stderr)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of what arrived: method, path, headers, body."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps({
            "backend": self.server.name,  # type: ignore[attr-defined]
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "client_port": self.client_address[1],
        }).encode()
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Backend:
    name: str
    port: int
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> list[str]:
        return self.server.hits  # type: ignore[attr-defined]


@pytest.fixture
def echo_backend() -> Iterator[Any]:
    """Factory for real HTTP backends on free ports; all are shut down at teardown."""
    started: list[Backend] = []

    def make(name: str = "backend") -> Backend:
        server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
        server.daemon_threads = True
        server.name = name  # type: ignore[attr-defined]
        server.hits = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        backend = Backend(name, server.server_address[1], server, thread)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.server.shutdown()
        backend.server.server_close()


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Gotunnel:
    """Runs the real CLI in a subprocess against a private state dir; tracks daemons to stop."""

    state_dir: Path
    http_port: int
    https_port: int
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, check: bool = False, timeout: float = 90, cwd: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> Result:
        env = {**os.environ, **self.env, **(extra_env or {})}
        proc = subprocess.run([sys.executable, "-m", "gotunnel_core", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=cwd or self.state_dir.parent)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"gotunnel {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json", check=True).out)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state_dir / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop_daemon(self) -> None:
        """Stop this state dir's daemon by its pid: SIGTERM, then SIGKILL after a deadline."""
        pid = self.daemon_pid()
        if pid is None:
            return
        stop_pid(pid)


def _gone(proc: Any) -> bool:
    """True once the process has exited (a zombie nobody reaped yet counts as exited)."""
    import psutil

    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Terminate one process by pid, escalating to SIGKILL; ignore one that is already gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    try:
        wait_for(lambda: _gone(proc), timeout=timeout, interval=0.01, what=f"pid {pid} to exit on SIGTERM")
    except AssertionError:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            return
        wait_for(lambda: _gone(proc), timeout=5, interval=0.01, what=f"pid {pid} to exit on SIGKILL")


@pytest.fixture
def gotunnel() -> Iterator[Gotunnel]:
    """A CLI runner with its own short state dir and free ports; its daemon is stopped at teardown."""
    root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    state = root / "state"
    runner = Gotunnel(state, free_port(), free_port())
    runner.env = {
        "GOTUNNEL_STATE_DIR": str(state),
        "GOTUNNEL_HTTP_PORT": str(runner.http_port),
        "GOTUNNEL_HTTPS_PORT": str(runner.https_port),
        "GOTUNNEL_BIND": "127.0.0.1",
        "GOTUNNEL_MDNS": "0",
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    pids: list[int] = []
    runner.seen_pids = pids  # type: ignore[attr-defined]
    try:
        yield runner
    finally:
        runner.stop_daemon()
        for pid in pids:
            stop_pid(pid)
        shutil.rmtree(root, ignore_errors=True)
