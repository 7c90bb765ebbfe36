"""Run the builtin engine in its own process (so tests can measure its RSS).

usage: python builtin_engine_proc.py CONFIG.json  -- CONFIG holds {"table": RouteTable.to_dict(), "settings": {}}.
Prints `ready` once listening; stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import uvloop

from gotunnel_builtin_proxy.engine import BuiltinEngine
from gotunnel_core.engine import EngineContext
from gotunnel_core.models import RouteTable


async def main(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    engine = BuiltinEngine(EngineContext(work_dir=config_path.parent, settings=config.get("settings", {})))
    await engine.start(RouteTable.from_dict(config["table"]))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await engine.stop()


if __name__ == "__main__":
    uvloop.run(main(Path(sys.argv[1])))
