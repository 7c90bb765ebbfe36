"""Worker process entry point: serve inherited listening sockets, follow the parent's control channel.

usage (by WorkerSupervisor only): python -m gotunnel_builtin_proxy.worker HTTP_FD HTTPS_FD CONTROL_FD
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

STATS_INTERVAL = 1.0


async def _serve(http_fd: int, https_fd: int, control_fd: int) -> None:
    from gotunnel_core.engine import EngineContext
    from gotunnel_core.models import RouteTable

    from .engine import BuiltinEngine

    loop = asyncio.get_running_loop()
    # SIGINT goes to the whole process group (a Ctrl-C in the daemon's terminal): the parent decides.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    control = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_connection(sock=control, limit=2**26)
    socks = (socket.socket(fileno=http_fd), socket.socket(fileno=https_fd))
    engine: BuiltinEngine | None = None

    def send(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if engine is not None:
                send({"op": "stats", "stats": {**engine.stats(), **engine.tunnel_stats()}})

    reporter = loop.create_task(report())
    try:
        while line := await reader.readline():
            msg = json.loads(line)
            op, mid = msg.get("op"), msg.get("id")
            try:
                if op == "start":
                    hook = None
                    if msg.get("hooks"):
                        from gotunnel_core.plugins import make_plugin_manager

                        hook = make_plugin_manager().hook
                    engine = BuiltinEngine(EngineContext(work_dir=Path(msg.get("work_dir", ".")),
                                                         settings=msg["settings"], hook=hook))
                    await engine.serve(RouteTable.from_dict(msg["table"]), socks)
                elif op == "apply" and engine is not None:
                    await engine.apply(RouteTable.from_dict(msg["table"]))
                elif op == "stop":
                    if engine is not None:
                        await engine.stop()
                        engine = None
                    send({"id": mid, "ok": True})
                    await writer.drain()
                    break
                send({"id": mid, "ok": True})
            except Exception as exc:  # reported to the parent, which raises it from apply()
                send({"id": mid, "ok": False, "error": str(exc)})
    finally:
        reporter.cancel()
        if engine is not None:  # the parent went away without a stop: drain and exit anyway
            with contextlib.suppress(Exception):
                await engine.stop()
        writer.close()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    from gotunnel_core import tracing
    from gotunnel_core.memory import TRIM_THRESHOLD, keep_large_blocks_mmapped

    keep_large_blocks_mmapped(trim=TRIM_THRESHOLD)
    tracing.configure()  # the same OTEL_* environment as the daemon: request spans from every worker

    args = [int(a) for a in (argv if argv is not None else sys.argv[1:])]
    uvloop.run(_serve(*args))


if __name__ == "__main__":
    main()
