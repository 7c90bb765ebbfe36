"""Multi-process mode (`workers = N`): the parent keeps the listening sockets, N workers inherit them.

The listeners are created once in the parent and never closed on reload (closing one socket of
a reuseport group would reset the connections queued on it); route tables reach every worker
as JSON lines over a socketpair, and `apply` returns once every worker acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import json
import os
import socket
import sys
from typing import Any

from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.models import RouteTable

from .config import Settings

ACK_TIMEOUT = 15.0
_COUNTERS = ("connections", "connections_total", "requests_total", "rejected_connections", "upstream_errors",
             "idle_upstream")


def _listen(bind: str, port: int) -> socket.socket:
    """A bound, listening, inheritable socket (the parent never accepts on it)."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.listen(2048)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"builtin engine cannot listen on {bind}:{port}: {exc}",
                             hint="another program uses the port; pick other ports or stop it") from None
    return sock


class _Worker:
    """One worker process and its control channel."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.stats: dict[str, Any] = {}
        self.alive = True
        self.reader_task: asyncio.Task[None] | None = None


class WorkerSupervisor:
    """Starts, updates, watches (restarts on crash) and stops the worker processes."""

    def __init__(self, settings: Settings, context: EngineContext) -> None:
        self.settings = settings
        self.context = context
        self.workers: list[_Worker] = []
        self.socks: list[socket.socket] = []
        self.table: RouteTable | None = None
        self.stopping = False
        self._ids = itertools.count(1)
        self._hooks = False
        self.restarts = 0

    def _worker_settings(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.settings), "workers": 1}

    async def start(self, table: RouteTable) -> None:
        from .tls import CertStore

        CertStore().snapshot(table)  # refuse bad certificates before any process starts
        hook = self.context.hook
        with contextlib.suppress(AttributeError):
            self._hooks = bool(hook is not None and hook.gotunnel_request.get_hookimpls())
        given = self.context.listeners  # ports 80/443 through `gotunnel ports`, or None
        if given is not None:
            given = given.dup()
            self.socks = [given.socket_of(table.listen.http_port), given.socket_of(table.listen.https_port)]
            given.close_idle_sides()
            for sock in self.socks:
                sock.setblocking(False)
                sock.set_inheritable(True)
        else:
            self.socks = [_listen(table.listen.bind, table.listen.http_port),
                          _listen(table.listen.bind, table.listen.https_port)]
        self.table = table
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(self.settings.workers)))
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, index: int) -> None:
        assert self.table is not None
        parent, child = socket.socketpair()
        fds = (self.socks[0].fileno(), self.socks[1].fileno(), child.fileno())
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gotunnel_builtin_proxy.worker", *map(str, fds),
                pass_fds=fds, env=dict(os.environ), stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_connection(sock=parent, limit=2**26)
        worker = _Worker(index, proc, reader, writer)
        worker.reader_task = asyncio.get_running_loop().create_task(self._read(worker))
        if index < len(self.workers):
            self.workers[index] = worker
        else:
            self.workers.append(worker)
        reply = await self._request(worker, {
            "op": "start", "table": self.table.to_dict(), "settings": self._worker_settings(),
            "hooks": self._hooks, "work_dir": str(self.context.work_dir),
        })
        if not reply.get("ok"):
            raise RuntimeFailure(f"builtin worker {index} failed to start: {reply.get('error')}")

    async def _request(self, worker: _Worker, message: dict[str, Any]) -> dict[str, Any]:
        mid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        worker.pending[mid] = fut
        worker.writer.write(json.dumps({**message, "id": mid}).encode() + b"\n")
        try:
            return await asyncio.wait_for(fut, ACK_TIMEOUT)
        except asyncio.TimeoutError:
            return {"ok": False, "error": "worker did not answer in time"}
        finally:
            worker.pending.pop(mid, None)

    async def _read(self, worker: _Worker) -> None:
        """Acks and periodic stats from one worker; on EOF the worker is gone (restart it unless stopping)."""
        try:
            while line := await worker.reader.readline():
                msg = json.loads(line)
                if msg.get("op") == "stats":
                    worker.stats = msg["stats"]
                    continue
                fut = worker.pending.get(msg.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, ValueError):
            pass
        worker.alive = False
        for fut in worker.pending.values():
            if not fut.done():
                fut.set_result({"ok": False, "error": "worker exited"})
        with contextlib.suppress(ProcessLookupError):
            await worker.proc.wait()
        if not self.stopping:
            log = self.context.log
            if log is not None:
                log.warning("builtin worker exited; restarting it", worker=worker.index, code=worker.proc.returncode)
            self.restarts += 1
            with contextlib.suppress(Exception):
                await self._spawn(worker.index)

    async def apply(self, table: RouteTable) -> None:
        from .tls import CertStore

        CertStore().snapshot(table)  # the same check every worker makes, once, before any swaps
        self.table = table
        replies = await asyncio.gather(*(self._request(w, {"op": "apply", "table": table.to_dict()})
                                         for w in self.workers if w.alive))
        errors = [r.get("error") for r in replies if not r.get("ok")]
        if errors:
            raise EngineValidationError(f"builtin workers refused the route table: {errors[0]}")

    async def stop(self) -> None:
        self.stopping = True
        workers = [w for w in self.workers if w.alive]
        await asyncio.gather(*(self._request(w, {"op": "stop"}) for w in workers), return_exceptions=True)
        for w in self.workers:
            try:
                await asyncio.wait_for(w.proc.wait(), self.settings.drain_timeout + 2)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            w.writer.close()
            if w.reader_task is not None:
                w.reader_task.cancel()
        for sock in self.socks:
            sock.close()
        self.socks = []
        self.workers = []

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.alive]

    def metrics(self) -> Any:
        """Per-tunnel counters summed over the workers' last reports (at most a second old); a
        backend is up when any worker would use it."""
        from gotunnel_core.metrics.stats import BackendHealth, EngineStats, TunnelStats

        result = EngineStats(backends=[], restarts=self.restarts)
        up: dict[tuple[str, str], bool] = {}
        for w in self.workers:
            for name, data in (w.stats.get("tunnels") or {}).items():
                result.tunnel(name).merge(TunnelStats.from_dict(data))
            for tunnel, url, available in w.stats.get("backends") or ():
                up[(tunnel, url)] = up.get((tunnel, url), False) or bool(available)
        result.backends = [BackendHealth(t, u, v) for (t, u), v in sorted(up.items())]
        return result

    def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {key: 0 for key in _COUNTERS}
        unhealthy: set[str] = set()
        for w in self.workers:
            for key in _COUNTERS:
                total[key] += w.stats.get(key, 0)
            unhealthy.update(w.stats.get("unhealthy_backends", ()))
        total["unhealthy_backends"] = sorted(unhealthy)
        total["workers"] = len(self.workers)
        total["workers_alive"] = sum(1 for w in self.workers if w.alive)
        total["worker_pids"] = self.pids()
        return total
