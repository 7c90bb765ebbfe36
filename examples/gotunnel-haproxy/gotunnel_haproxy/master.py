"""HAProxy's master CLI (`-S <unix socket>`): `show proc`, how the engine knows the master is settled.

The master answers its CLI from the same event loop that handles its signals. Right after a
start or a reload (the master re-executes itself), a signal can arrive before that loop runs and
be lost (HAProxy 2.6: a SIGUSR1 sent within a few tens of milliseconds of a reload never stops
it). So a start or a reload counts as done only once `show proc` answers with the expected
reload count; `[failed: N]` also tells a refused reload from a slow one.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]")
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s")


@dataclass(frozen=True)
class Processes:
    """What `show proc` says: the master's reload counts, the current and the old (draining) workers."""

    reloads: int
    failed: int
    workers: tuple[int, ...] = ()
    old_workers: tuple[int, ...] = field(default=())


def parse_show_proc(text: str) -> Processes | None:
    """Parse `show proc`; None when it is not the master's answer."""
    reloads = failed = -1
    section = ""
    workers: list[int] = []
    old: list[int] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            section = line.lstrip("# ").lower()
            continue
        master = _MASTER_LINE.match(line)
        if master:
            reloads, failed = int(master.group(2)), int(master.group(3))
            continue
        worker = _WORKER_LINE.match(line)
        if worker:
            (old if section.startswith("old") else workers).append(int(worker.group(1)))
    if reloads < 0:
        return None
    return Processes(reloads, failed, tuple(workers), tuple(old))


async def show_proc(path: str, timeout: float = 2.0) -> Processes | None:
    """`show proc` on the master CLI at `path`; None while the master does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(b"show proc\n")
        writer.write_eof()  # one command, then the master answers and closes
        data = await asyncio.wait_for(reader.read(), timeout)  # to EOF
    except (OSError, RuntimeError, asyncio.TimeoutError):
        # RuntimeError: uvloop's "the handler is closed" when the master (re-executing itself
        # on a reload) closed the connection before the command was written: not answering yet.
        return None
    finally:
        writer.close()
    return parse_show_proc(data.decode("utf-8", "replace"))


__all__ = ["Processes", "parse_show_proc", "show_proc"]
