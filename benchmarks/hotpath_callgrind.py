"""Instructions per request on the builtin engine's HTTP/1.1 hot path, independent of machine load.

`python -m benchmarks.hotpath_callgrind [--requests N]` runs, under valgrind's callgrind, one
process holding a fixed-answer backend, the builtin engine and a client that sends N keep-alive
requests one after another, then the same with 2N; the difference divided by N is what one more
request costs (engine, client and backend together, start-up cancelled out). Run it on two trees
(PYTHONPATH pointing at the other tree) to see what a change costs per request: the count does not
depend on what else runs on the machine, unlike wrk's req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello world\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\nUser-Agent: hotpath\r\nAccept: */*\r\n\r\n"


class Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE * data.count(b"\r\n\r\n"))  # type: ignore[attr-defined]


class Client(asyncio.Protocol):
    """Sends the next request when the previous answer is complete (responses end with the body)."""

    def __init__(self, count: int, done: "asyncio.Future[None]") -> None:
        self.left, self.done, self.buffer = count, done, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.endswith(b"hello world\n"):
            self.buffer = b""
            self.left -= 1
            if self.left:
                self.transport.write(REQUEST)  # type: ignore[attr-defined]
            elif not self.done.done():
                self.done.set_result(None)


async def run(count: int) -> None:
    from gotunnel_builtin_proxy.engine import BuiltinEngine
    from gotunnel_core.engine import EngineContext
    from gotunnel_core.models import Listen, RouteTable, Tunnel

    loop = asyncio.get_running_loop()
    backend = await loop.create_server(Backend, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        engine = BuiltinEngine(EngineContext(work_dir=Path(tmp), settings={}))
        http_port, https_port = _free(), _free()
        tunnel = Tunnel.from_raw({"name": "bench", "backends": [f"http://127.0.0.1:{port}"], "https": False})
        await engine.start(RouteTable(Listen("127.0.0.1", http_port, https_port), (tunnel,), {}, None))
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(lambda: Client(count, done), "127.0.0.1", http_port)
        await done
        await engine.stop()
    backend.close()


def _free() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def instructions(count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                              sys.executable, "-m", "benchmarks.hotpath_callgrind", "--child", str(count)],
                             capture_output=True, text=True, env=os.environ, check=True)
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(out.stderr[-2000:])
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(run(args.child))
        return
    n = args.requests
    one, two = instructions(n), instructions(2 * n)
    print(f"instructions per request: {(two - one) / n:.0f} (callgrind, {n} vs {2 * n} requests, "
          "engine + client + backend in one process)")


if __name__ == "__main__":
    main()
