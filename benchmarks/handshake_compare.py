"""What one resumed HTTPS connection costs the builtin engine and nginx, measured the same way.

`python -m benchmarks.handshake_compare [--connections N] [--rounds R]` runs each server as its
own process behind the same backend process, and one client that opens N new TLS connections one
after another, each resuming the first one's session (as browsers and wrk do) and sending one
`Connection: close` request. For each engine it reports:

- the server process's user and system CPU time per connection (psutil, native, R rounds
  alternating between the engines; the median), and
- with `--callgrind`, user-space instructions per connection: the server under valgrind's
  callgrind, run with N and with 2N connections, the difference divided by N (start-up cancels
  out; independent of machine load).

Issue 20's finding that this makes repeatable: the two servers execute about the same number of
user-space instructions per resumed connection (most of them OpenSSL's, the same library), while
the builtin engine spends about a third more CPU time on them. What is left of the gap is not how
much code runs but how it runs: Python's per-connection objects and calls, cold in the caches
after each handshake, and the kernel. nginx is the reference config of `benchmarks.engines`
reduced to one server block (`master_process off` so one process does all the work).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .util import free_port

NGINX = "/usr/sbin/nginx"
NAME = "alpha"
REQUEST = f"GET / HTTP/1.1\r\nHost: {NAME}.localhost\r\nConnection: close\r\n\r\n".encode()
BODY = b"hello world\n"

BACKEND = r"""
import asyncio, sys, uvloop
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello world\n"
class Backend(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(ANSWER * data.count(b"\r\n\r\n"))
async def main():
    await asyncio.get_running_loop().create_server(Backend, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""

BUILTIN = r"""
import asyncio, pickle, signal, sys, uvloop
from pathlib import Path
async def main():
    from gotunnel_builtin_proxy.engine import BuiltinEngine
    from gotunnel_core.engine import EngineContext
    from gotunnel_core.testing.engines import make_table
    backend, http_port, https_port, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    pki = pickle.loads((work / "pki.pickle").read_bytes())
    engine = BuiltinEngine(EngineContext(work_dir=work, settings={}))
    table = make_table([{"name": "alpha", "backends": [f"http://127.0.0.1:{backend}"]}], http_port, https_port, pki)
    await engine.start(table)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await engine.stop()
uvloop.run(main())
"""


@dataclass
class Setup:
    """The shared pieces: a work directory with the test PKI, and the backend's port."""

    work: Path
    pki: Any
    backend_port: int


def wait_listening(port: int, timeout: float = 60.0) -> None:
    """Poll until something accepts on `port` (valgrind start-up takes seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s") from None
            time.sleep(0.05)


def resumed_connections(port: int, context: ssl.SSLContext, count: int) -> None:
    """`count` new TLS connections, each resuming the first one's session, one request each."""
    session = None
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname=f"{NAME}.localhost", session=session) as tls:
                tls.sendall(REQUEST)
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
                if not answer.endswith(BODY):
                    raise RuntimeError(f"unexpected answer: {answer[:200]!r}")
                if session is None:
                    session = tls.session
                elif not tls.session_reused:
                    raise RuntimeError("the server did not resume the TLS session")


def nginx_command(setup: Setup, port: int) -> list[str]:
    """nginx as one process serving `port` with the gotunnel-issued certificate."""
    d = setup.work / f"nginx-{port}"
    d.mkdir()
    files = setup.pki.certs[NAME]
    (d / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; master_process off; user root; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $http_host;
  ssl_certificate {files.cert}; ssl_certificate_key {files.key}; ssl_protocols TLSv1.2 TLSv1.3;
  upstream backend {{ server 127.0.0.1:{setup.backend_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} ssl http2; server_name {NAME}.localhost; location / {{ proxy_pass http://backend; }} }}
}}""")
    return [NGINX, "-p", str(d), "-c", str(d / "nginx.conf")]


def server_command(engine: str, setup: Setup, port: int) -> list[str]:
    if engine == "nginx":
        return nginx_command(setup, port)
    return [sys.executable, "-c", BUILTIN, str(setup.backend_port), str(free_port()), str(port), str(setup.work)]


def stop(proc: subprocess.Popen[Any], port: int | None = None) -> None:
    """SIGTERM by pid (both servers exit cleanly on it, so valgrind writes its output), then SIGKILL.

    Under valgrind the signal does not cut nginx's epoll_wait short (it exits at its next timer,
    a minute later): a connection to `port` wakes it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if port is not None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def prepared(work: Path) -> Iterator[Setup]:
    """A test PKI in `work` and the backend process (stopped by its pid on the way out)."""
    import pickle

    from gotunnel_core.testing.engines import make_pki

    pki = make_pki(work / "pki", [NAME])
    (work / "pki.pickle").write_bytes(pickle.dumps(pki))
    backend_port = free_port()
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, str(backend_port)])
    try:
        wait_listening(backend_port)
        yield Setup(work, pki, backend_port)
    finally:
        stop(backend)


def cpu_per_connection(engine: str, setup: Setup, count: int, warmup: int = 200) -> tuple[float, float]:
    """(user, system) CPU microseconds per connection of the native server process."""
    import psutil

    port = free_port()
    proc = subprocess.Popen(server_command(engine, setup, port))
    try:
        wait_listening(port)
        context = setup.pki.client_context()
        resumed_connections(port, context, warmup)  # session, pools, caches
        before = psutil.Process(proc.pid).cpu_times()
        resumed_connections(port, context, count)
        after = psutil.Process(proc.pid).cpu_times()
    finally:
        stop(proc)
    return (after.user - before.user) / count * 1e6, (after.system - before.system) / count * 1e6


def instructions(engine: str, setup: Setup, count: int) -> int:
    """User-space instructions of the whole server run (start-up included) with `count` connections."""
    port = free_port()
    out = setup.work / f"callgrind-{engine}-{count}.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             *server_command(engine, setup, port)], stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port)
        resumed_connections(port, setup.pki.client_context(), count)
    finally:
        stop(proc, port)
    err = proc.stderr.read() if proc.stderr is not None else ""
    match = re.search(r"Collected : (\d+)", err)
    if match is None:
        raise RuntimeError(f"no callgrind total for {engine}: {err[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handshake_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000, help="per round (default 3,000; 100 with --callgrind)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="user-space instructions instead of CPU time")
    args = parser.parse_args()
    engines = ("builtin", "nginx") if os.path.exists(NGINX) else ("builtin",)
    with tempfile.TemporaryDirectory() as tmp, prepared(Path(tmp)) as setup:
        if args.callgrind:
            n = args.connections if args.connections != 3000 else 100
            for engine in engines:
                one, two = instructions(engine, setup, n), instructions(engine, setup, 2 * n)
                print(f"{engine:8s} {(two - one) / n:,.0f} user-space instructions per resumed connection "
                      f"(callgrind, {n} vs {2 * n} connections)")
            return
        rows: dict[str, list[tuple[float, float]]] = {engine: [] for engine in engines}
        for _ in range(args.rounds):
            for engine in engines:
                rows[engine].append(cpu_per_connection(engine, setup, args.connections))
        for engine, samples in rows.items():
            user = statistics.median(u for u, _ in samples)
            system = statistics.median(s for _, s in samples)
            print(f"{engine:8s} user {user:6.1f} us  system {system:6.1f} us per resumed connection "
                  f"(median of {args.rounds} rounds of {args.connections})")


if __name__ == "__main__":
    main()
