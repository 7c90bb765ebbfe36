"""Run the builtin engine standalone for benchmarks: one tunnel `bench` -> BACKEND_URL.

usage: python bench/run_engine.py BACKEND_URL HTTP_PORT HTTPS_PORT CERT_DIR [N_TUNNELS]
CERT_DIR receives a throwaway CA (ca.pem) and a leaf for bench.localhost.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from builtin_helpers import make_pki  # noqa: E402

from gotunnel_builtin_proxy.engine import BuiltinEngine  # noqa: E402
from gotunnel_core.engine import EngineContext  # noqa: E402
from gotunnel_core.models import Listen, RouteTable, Tunnel  # noqa: E402


async def main() -> None:
    backend, http_port, https_port, cert_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    extra = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    pki = make_pki(cert_dir, ["bench"])
    tunnels = [Tunnel.from_raw({"name": "bench", "backends": backend})]
    tunnels += [Tunnel.from_raw({"name": f"t{i}", "backends": backend}) for i in range(extra)]
    table = RouteTable(Listen("127.0.0.1", http_port, https_port), tuple(tunnels), {"bench": pki.certs["bench"]}, pki.default)
    engine = BuiltinEngine(EngineContext(work_dir=cert_dir, settings={}))
    await engine.start(table)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await engine.stop()


if __name__ == "__main__":
    uvloop.run(main())
