"""Multi-process mode (`workers = N`): the parent keeps the listening sockets, N workers inherit them.

How connections reach the workers:
- Linux: one SO_REUSEPORT group per port with one socket per worker, each worker inheriting only
  its own; the kernel hashes every new connection (by its addresses) to one member, so the
  workers share the load evenly (`make bench`, two workers under wrk: 54-64 % of the connections
  and 51-53 % of the CPU time on the busier one). With one shared socket, every idle worker wakes
  for each connection and whichever loop runs first takes it: one worker got 74-82 % of them.
  The hash ignores load: a connection waits for its worker even while the other one is idle.
- Sockets handed over by the daemon (ports 80/443 through `gotunnel ports`) are single sockets
  bound by a privileged helper; the workers share them (the port cannot be bound again here).
- macOS and the BSDs accept SO_REUSEPORT but do not balance it (one member gets the
  connections), Windows has no such group: the workers share one socket there too.
Sharing is the only case where libuv's accept behaviour matters: since libuv 1.45 (uvloop 0.23
bundles 1.52) a loop accepts one connection per wake-up, which `UV_TCP_SINGLE_ACCEPT=1` used to
ask for; libuv no longer reads that variable on Unix, so it is not set.

The listeners are created once in the parent and never closed on reload (closing one socket of
a reuseport group would reset the connections queued on it). A worker that crashes is restarted
on the same socket; the connections the kernel hashed to that socket meanwhile wait in its
backlog (the parent keeps it listening) and are served by the new worker, about a second later,
instead of being reset. A replacement that cannot start is retried for the same reason. Route
tables reach every worker as JSON lines over a socketpair, and `apply` returns once every worker
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import socket
import sys
from typing import Any

from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.models import Listen, RouteTable

from .config import Settings

ACK_TIMEOUT = 15.0
RESTART_PAUSE = 1.0  # before starting again a worker that died while starting
BACKLOG = 2048
_COUNTERS = ("connections", "connections_total", "requests_total", "rejected_connections", "upstream_errors",
             "idle_upstream")
_PER_WORKER = ("connections", "connections_total", "requests_total")


def reuseport_balances() -> bool:
    """Whether the kernel spreads a SO_REUSEPORT group's connections over its members (Linux 3.9+)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_listeners(listen: Listen, workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """The (HTTP, HTTPS) listening sockets of each worker: its own pair where the kernel balances
    a SO_REUSEPORT group, else the same pair for every worker. The parent never accepts on them."""
    from gotunnel_core.supervisor import bind_group

    count = workers if reuseport_balances() else 1
    groups: list[list[socket.socket]] = []
    try:
        for port in (listen.http_port, listen.https_port):
            groups.append(bind_group(listen.bind, port, BACKLOG, count))
    except RuntimeFailure as exc:
        for group in groups:
            for sock in group:
                sock.close()
        raise RuntimeFailure(f"builtin engine {exc.message}",
                             hint="another program uses the port; pick other ports or stop it") from None
    for sock in (*groups[0], *groups[1]):
        sock.setblocking(False)  # and not inheritable: `_spawn` passes each worker its own by pass_fds
    pairs = list(zip(groups[0], groups[1]))
    return [pairs[index % count] for index in range(workers)]


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
        self.started = False  # the worker acknowledged `start` and serves


class WorkerSupervisor:
    """Starts, updates, watches (restarts on crash) and stops the worker processes."""

    def __init__(self, settings: Settings, context: EngineContext) -> None:
        self.settings = settings
        self.context = context
        self.workers: list[_Worker] = []
        self.listeners: list[tuple[socket.socket, socket.socket]] = []  # worker index -> (HTTP, HTTPS)
        self.accept = "shared"  # or "reuseport": one socket per worker (health().extra shows which)
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
        if given is not None:  # single sockets bound by a privileged helper: shared by the workers
            given = given.dup()
            pair = (given.socket_of(table.listen.http_port), given.socket_of(table.listen.https_port))
            given.close_idle_sides()
            for sock in pair:
                sock.setblocking(False)
            self.listeners = [pair] * self.settings.workers
        else:
            self.listeners = bind_listeners(table.listen, self.settings.workers)
        self.accept = "reuseport" if len({id(pair) for pair in self.listeners}) > 1 else "shared"
        self.table = table
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(self.settings.workers)))
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, index: int) -> None:
        assert self.table is not None
        parent, child = socket.socketpair()
        http, https = self.listeners[index]  # the same sockets again when a crashed worker restarts
        # Only pass_fds reach the worker: uvloop's spawn ignores close_fds and would hand every
        # inheritable descriptor (the other workers' sockets) to each child.
        fds = (http.fileno(), https.fileno(), child.fileno())
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
        worker.started = True

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
            await self._replace(worker)

    async def _replace(self, worker: _Worker) -> None:
        """Start a new worker on a dead one's sockets. With a socket of its own, a worker must be
        serving: the connections hashed to its socket wait for it. So a replacement that fails to
        start is killed (its own watcher then tries again), and one that died starting is retried
        after a pause rather than in a tight fork loop."""
        log = self.context.log
        if log is not None:
            log.warning("builtin worker exited; restarting it", worker=worker.index, code=worker.proc.returncode)
        pause = 0.0 if worker.started else RESTART_PAUSE
        while not self.stopping:
            if pause:
                await asyncio.sleep(pause)
                if self.stopping:
                    return
            self.restarts += 1
            try:
                await self._spawn(worker.index)
                return
            except Exception as exc:  # noqa: BLE001 - reported, then retried
                if log is not None:
                    log.warning("builtin worker failed to restart", worker=worker.index, error=str(exc))
                replacement = self.workers[worker.index]
                if replacement is not worker:  # it runs but does not serve: its exit retries
                    with contextlib.suppress(ProcessLookupError):
                        replacement.proc.kill()
                    return
                pause = RESTART_PAUSE  # not even started (no process): try again

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
        for sock in {id(s): s for pair in self.listeners for s in pair}.values():
            sock.close()
        self.listeners = []
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
        total["worker_accept"] = self.accept
        # each worker's share (its counters restart from zero when the worker is restarted)
        total["per_worker"] = [{"index": w.index, "pid": w.proc.pid, "alive": w.alive,
                                **{key: w.stats.get(key, 0) for key in _PER_WORKER}} for w in self.workers]
        return total
