"""The builtin engine's request path alone: `python -m benchmarks.hotpath [--browser] [--callgrind]`.

One client connection and one pooled upstream connection of the real protocol classes, on
in-memory transports: N requests go through the client side's parser, routing and head rebuild,
the canned backend response through the upstream side's parser and relay. No sockets, so what is
left is the Python (or compiled) code plus httptools: the part of a request's cost this project
writes. `--callgrind` runs this twice under valgrind (N and 6N requests) and prints the
difference per request: instructions, repeatable to a fraction of a percent on a busy machine.
GOTUNNEL_PURE_PYTHON=1 measures the pure-Python build where the compiled one is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WRK = b"GET / HTTP/1.1\r\nHost: bench.localhost:8080\r\n\r\n"
BROWSER = (b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: bench.localhost:8080\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120\r\nAccept: */*\r\n"
           b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Referer: http://bench.localhost:8080/\r\nCookie: a=b; c=d\r\nSec-Fetch-Dest: script\r\n"
           b"Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\nConnection: keep-alive\r\n\r\n")
#: What the bench backend (nginx) answers.
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 03 Dec 2026 10:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n")


class MemoryTransport:
    """Just enough of an asyncio transport: keeps the last bytes written."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def writelines(self, parts: Any) -> None:
        self.last = b"".join(parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, *args: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def run(requests: int, request: bytes, host_header: str | None = None, inspect: bool = False) -> float:
    """Seconds for `requests` proxied requests after a warm-up (engine built as the daemon builds it),
    through a tunnel with `host_header` set when given (else the default, `preserve`); with `inspect`,
    an inspected tunnel recorded natively (its connection behind `recording.RecordingConnection`)."""
    from gotunnel_builtin_proxy.config import Settings
    from gotunnel_builtin_proxy.engine import BuiltinEngine
    from gotunnel_builtin_proxy.protocol import ClientProtocol
    from gotunnel_builtin_proxy.state import ProxyState
    from gotunnel_builtin_proxy.tls import CertStore
    from gotunnel_builtin_proxy.upstream import UpstreamProtocol
    from gotunnel_core.engine import EngineContext
    from gotunnel_core.models import Listen, RouteTable, Tunnel

    from gotunnel_core.inspect.native import InspectRecorder
    from gotunnel_core.inspect.records import RecordStore

    recorder = InspectRecorder(RecordStore(500, 1024 * 1024)) if inspect else None
    engine = BuiltinEngine(EngineContext(work_dir=Path(tempfile.gettempdir()), settings={}, recorder=recorder))
    engine._settings, engine._certs = Settings(), CertStore()  # what serve() sets before _build
    raw: dict[str, object] = {"name": "bench", "backends": ["http://127.0.0.1:9"]}
    if host_header is not None:
        raw["host_header"] = host_header
    if inspect:
        raw["inspect"] = True
    table = RouteTable(Listen("127.0.0.1", 8080, 8443), (Tunnel.from_raw(raw),), {}, None)
    router, _, _ = engine._build(table)
    st = ProxyState(loop=asyncio.get_running_loop(), settings=engine._settings, router=router)
    pool = next(iter(engine._pools.values()))
    up, up_transport = UpstreamProtocol(pool), MemoryTransport()
    backend_side: Any = up  # what the backend's bytes are handed to
    if recorder is not None:
        from gotunnel_builtin_proxy.recording import RecordingConnection

        tunnel = table.tunnels[0]
        backend_side = RecordingConnection(up, recorder.open(tunnel, tunnel.backends[0]))
    backend_side.connection_made(up_transport)
    pool.release(up)
    client, client_transport = ClientProtocol(st, False), MemoryTransport()
    client.connection_made(client_transport)
    for _ in range(200):
        client.data_received(request)
        backend_side.data_received(RESPONSE)
    proxied = up_transport.last.startswith(request.split(b" ", 1)[0])
    if not (proxied and client_transport.last.endswith(b"hello world\n")):
        raise RuntimeError(f"the request was not proxied: {up_transport.last!r} {client_transport.last!r}")
    if recorder is not None and not (len(recorder.store) and next(recorder.store.newest_first()).status == 200):
        raise RuntimeError("the request was not recorded")
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(requests):
        client.data_received(request)
        backend_side.data_received(RESPONSE)
    return time.perf_counter() - t0


def instructions_per_request(requests: int, browser: bool, host_header: str | None = None,
                             inspect: bool = False) -> float:
    """Instructions (callgrind) of 6N minus N requests, per request: start-up and warm-up cancel out."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (requests, 6 * requests):
            out = Path(tmp) / f"cg.{n}"
            argv = [sys.executable, "-m", "benchmarks.hotpath", "-n", str(n), *(["--browser"] if browser else []),
                    *(["--host-header", host_header] if host_header is not None else []),
                    *(["--inspect"] if inspect else [])]
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv], check=True,
                           capture_output=True)
            totals.append(int(re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M).group(1)))
    return (totals[1] - totals[0]) / (5 * requests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--requests", type=int, default=None,
                   help="requests (default 100,000; 1,000 with --callgrind)")
    p.add_argument("--browser", action="store_true", help="a 12-header browser request instead of wrk's 1 header")
    p.add_argument("--callgrind", action="store_true", help="instructions per request instead of time")
    p.add_argument("--host-header", metavar="MODE", default=None,
                   help="the tunnel's host_header: preserve (the default), backend, or a host[:port]")
    p.add_argument("--inspect", action="store_true", help="an inspected tunnel, recorded natively")
    args = p.parse_args(argv)
    import gotunnel_builtin_proxy

    compiled = getattr(gotunnel_builtin_proxy, "compiled", lambda: False)  # absent before the compiled build
    build = "compiled" if compiled() else "pure-Python"
    kind = "browser" if args.browser else "wrk"
    mode = f", host_header {args.host_header}" if args.host_header is not None else ""
    mode += ", inspected" if args.inspect else ""
    if args.callgrind:
        per = instructions_per_request(args.requests or 1000, args.browser, args.host_header, args.inspect)
        print(f"{per:,.0f} instructions per request ({kind}-style request{mode}, {build} build)")
        return 0
    import uvloop

    n = args.requests or 100_000
    seconds = uvloop.run(run(n, BROWSER if args.browser else WRK, args.host_header, args.inspect))
    print(f"{1e6 * seconds / n:.2f} us per request ({kind}-style request{mode}, {build} build, {n:,} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
