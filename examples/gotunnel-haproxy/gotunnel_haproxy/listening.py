"""Whether a process still listens on given TCP ports: how a reload knows an old HAProxy worker
stopped accepting (it closes its copies of the shared listening sockets when it soft-stops)."""

from __future__ import annotations

from typing import Collection


def listens_on(pid: int, ports: Collection[int]) -> bool:
    """True while process `pid` holds a listening TCP socket on one of `ports`; False once it is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        connections = process.net_connections(kind="tcp") if hasattr(process, "net_connections") \
            else process.connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports for c in connections)
