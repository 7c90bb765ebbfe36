"""Test helper (not product code): run MdnsAdvertiser, controlled by JSON lines on stdin.

Commands: {"op": "publish", "name": ..., "http_port": ..., "https_port": ..., "path": ...},
{"op": "withdraw", "name": ...}, {"op": "published"}, {"op": "close"}.
Each command gets one JSON reply line; {"event": "ready"} is printed after start().
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading

from gotunnel_core.errors import GotunnelError
from gotunnel_core.mdns import MdnsAdvertiser, NameConflict


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    adv = MdnsAdvertiser(args.iface or None, poll_interval=args.poll)
    await adv.start()
    threading.Thread(target=read_stdin, daemon=True).start()
    emit({"event": "ready", "published": adv.published()})
    while True:
        line = await queue.get()
        if line is None:
            await adv.close()
            return
        cmd = json.loads(line)
        op = cmd.pop("op")
        try:
            if op == "publish":
                await adv.publish(cmd.pop("name"), **cmd)
                emit({"ok": True, "published": adv.published()})
            elif op == "withdraw":
                await adv.withdraw(cmd["name"])
                emit({"ok": True})
            elif op == "published":
                emit({"ok": True, "published": adv.published()})
            elif op == "close":
                await adv.close()
                emit({"ok": True})
                return
        except NameConflict as exc:
            emit({"ok": False, "error": "NameConflict", "message": exc.message, "hint": exc.hint,
                  "suggestion": exc.suggestion})
        except GotunnelError as exc:
            emit({"ok": False, "error": type(exc).__name__, "message": exc.message})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", action="append")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.uvloop:
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))
