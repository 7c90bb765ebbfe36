"""The daemon process: holds the daemon lock, runs the tunnel manager and answers the unix-socket API.

The socket (0600, in the 0700 state directory) only starts answering once the engine serves
the restored tunnels, so a client that gets a `ping` answer can rely on the routes.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
from typing import Any, Awaitable, Callable, Mapping

from .. import __version__, error_reports, tracing
from ..audit import AUDITED_OPS, AuditLog, peer_credentials
from ..errors import GotunnelError, RuntimeFailure, UsageError
from ..fsutil import atomic_write
from ..logs import get_logger
from ..memory import release_free_heap
from ..paths import StateLayout
from ..plugins import GotunnelPluginManager
from .manager import TunnelManager
from .protocol import MAX_MESSAGE, DaemonStopping, encode, error_response

log = get_logger("gotunnel.daemon")


class DaemonLockHeld(RuntimeFailure):
    """Another daemon already owns this state directory."""


def acquire_daemon_lock(layout: StateLayout) -> int:
    """Take the daemon lock for the life of this process; fail if another daemon holds it."""
    fd = os.open(layout.daemon_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DaemonLockHeld(f"another gotunnel daemon already runs for {layout.root}") from None
    return fd


class DaemonServer:
    """Dispatches API requests to the tunnel manager until asked to stop."""

    def __init__(self, layout: StateLayout, settings: Mapping[str, Any], plugins: GotunnelPluginManager) -> None:
        self.layout = layout
        self.settings = settings
        self.manager = TunnelManager(layout, settings, plugins)
        self.stopping = asyncio.Event()
        self.forget_on_exit = False
        self.dashboard: Any = None  # DashboardServer, when the `dashboard` setting is on
        self.ops: dict[str, Callable[[Mapping[str, Any]], Awaitable[Any]]] = {
            "ping": self._ping,
            # `force` false refuses a name other backends serve (`gotunnel start` and `gotunnel run`
            # send false unless --force: no project takes another's name); true, the default for
            # callers that predate it, replaces. `if_backends` makes `stop` skip replaced tunnels.
            "start": lambda a: self.manager.start_tunnels(list(a.get("tunnels", [])), force=a.get("force", True) is not False),
            "stop": lambda a: self.manager.stop_tunnels(list(a.get("names", [])), _mapping_or_none(a.get("if_backends"))),
            "stop_all": self._stop_all,
            "list": self._list,
            "status": self._status,
            "renew": lambda a: self.manager.renew_certificates(list(a.get("names", []))),
            "metrics": self._metrics,
            "watch": lambda a: self.manager.start_provider(str(a.get("provider", ""))),
            "unwatch": lambda a: self.manager.stop_provider(str(a.get("provider", ""))),
        }
        self.metrics_endpoint: Any = None
        self.audit = AuditLog(layout.audit_log)

    async def _ping(self, _: Mapping[str, Any]) -> dict[str, Any]:
        from ..config import saved_settings

        return {
            "pid": os.getpid(),
            "version": __version__,
            "engine": self.settings["engine"],
            "bind": self.settings["bind"],
            "http_port": self.settings["http_port"],
            "https_port": self.settings["https_port"],
            "metrics_port": self.metrics_endpoint.port if self.metrics_endpoint is not None else None,
            "http2": self.settings["http2"],
            "mdns": self.settings["mdns"],
            "state_dir": str(self.layout.root),
            "settings": saved_settings(self.settings),
            # Shutting down: a client must not hand it changes, but wait for it and start another.
            "stopping": self.stopping.is_set(),
            "dashboard": self.dashboard.info() if self.dashboard is not None else None,
        }

    async def _list(self, _: Mapping[str, Any]) -> list[dict[str, Any]]:
        problems = await self.manager.backend_problems()
        return self.manager.listing(problems)

    async def _status(self, _: Mapping[str, Any]) -> dict[str, Any]:
        problems = await self.manager.backend_problems()
        return {**self.manager.status(problems), "version": __version__, "state_dir": str(self.layout.root)}

    async def _metrics(self, _: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": (await self.manager.metrics_text()).decode()}

    def _open_metrics_endpoint(self) -> None:
        """Serve /metrics on 127.0.0.1:metrics_port when set; scrapes run on the daemon's loop."""
        port = int(self.settings.get("metrics_port") or 0)
        if not port:
            return
        from ..metrics.endpoint import MetricsEndpoint

        loop = asyncio.get_running_loop()

        def render() -> bytes:
            return asyncio.run_coroutine_threadsafe(self.manager.metrics_text(), loop).result(timeout=30)

        try:
            self.metrics_endpoint = MetricsEndpoint(port, render)
        except OSError as exc:
            raise RuntimeFailure(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}",
                                 hint="pick another metrics_port, or 0 to turn the endpoint off") from None
        log.info("metrics endpoint listening", address=f"127.0.0.1:{self.metrics_endpoint.port}")

    async def _stop_all(self, _: Mapping[str, Any]) -> dict[str, Any]:
        names = sorted(self.manager.tunnels)
        self.forget_on_exit = True
        self.stopping.set()
        return {"stopped": names, "pid": os.getpid()}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one request on one connection; state-changing operations go to the audit log."""
        op: str | None = None
        args: dict[str, Any] = {}
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                op = request["op"]
                args = request.get("args") or {}
                if op not in self.ops or not isinstance(args, dict):
                    raise UsageError(f"unknown daemon operation {op!r}")
            except (ValueError, KeyError, TypeError):
                raise UsageError("malformed request to the daemon") from None
            if self.stopping.is_set() and op != "ping":
                raise DaemonStopping("the daemon is stopping", hint="run the command again")
            response = {"ok": True, "result": await self._call(op, args)}
        except GotunnelError as exc:
            response = error_response(exc)
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            log.exception("request failed")
            error_reports.capture(exc)
            response = error_response(RuntimeFailure(f"internal daemon error: {type(exc).__name__}: {exc}",
                                                     hint="see `gotunnel logs`"))
        if isinstance(op, str) and op in AUDITED_OPS and isinstance(args, dict):
            self._audit(op, args, response, writer)
        try:
            writer.write(encode(response))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _call(self, op: str, args: dict[str, Any]) -> Any:
        """Run one operation; a control operation gets a trace span (when tracing is on)."""
        if op not in AUDITED_OPS:
            return await self.ops[op](args)
        names = [t.get("name") for t in args.get("tunnels") or () if isinstance(t, dict)] or args.get("names")
        with tracing.span(f"gotunnel {op}", operation=op, tunnels=[str(n) for n in names or ()]):
            return await self.ops[op](args)

    def _audit(self, op: str, args: Mapping[str, Any], response: Mapping[str, Any],
               writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = peer_credentials(sock) if sock is not None else None
        try:
            self.audit.record(op, args, ok=bool(response.get("ok")), error=response.get("error"), peer=peer)
        except OSError as exc:  # a full disk must not stop the daemon from answering
            log.error("audit log not written", error=str(exc), op=op)

    async def run(self, initial_tunnels: list[Any] | None = None,
                  on_ready: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        """Start everything, serve until SIGTERM/SIGINT or `stop --all`, then shut down cleanly.

        `on_ready` gets every served tunnel (as `list` shows it) once they serve."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self._open_metrics_endpoint()  # first: a taken port fails the daemon before anything starts
        try:
            if self.settings.get("dashboard", True):
                from ..dashboard.server import DashboardServer

                # Before the first route table: it routes gotunnel.localhost to the dashboard.
                self.dashboard = DashboardServer(self.manager, self.settings)
                await self.dashboard.start()
                self.manager.dashboard_port = self.dashboard.engine_port
            await self.manager.startup()
            if initial_tunnels:
                await self.manager.start_tunnels(initial_tunnels, force=True)
        except BaseException:
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            if self.dashboard is not None:
                await self.dashboard.close()
            raise
        if on_ready is not None:
            on_ready(await self._list({}))
        try:
            self.layout.socket.unlink()
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self.handle, path=str(self.layout.socket), limit=MAX_MESSAGE)
        finally:
            os.umask(old_umask)
        os.chmod(self.layout.socket, 0o600)
        atomic_write(self.layout.pidfile, f"{os.getpid()}\n", mode=0o600)
        log.info("daemon listening", socket=str(self.layout.socket), pid=os.getpid())
        release_free_heap()  # start-up's garbage (imports, certificates) back to the system
        try:
            await self.stopping.wait()
        finally:
            server.close()
            if self.dashboard is not None:
                await self.dashboard.close()
            if self.metrics_endpoint is not None:
                await asyncio.to_thread(self.metrics_endpoint.close)
            await self.manager.shutdown(forget=self.forget_on_exit)
            for path in (self.layout.socket, self.layout.pidfile):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            log.info("daemon stopped", forget=self.forget_on_exit)


def _mapping_or_none(raw: Any) -> dict[str, list[str]] | None:
    """`if_backends` of a `stop` request: name -> list of backend URLs, or absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise UsageError("malformed request to the daemon: if_backends must map names to URL lists")
    return raw


def run_daemon(
    layout: StateLayout,
    settings: Mapping[str, Any],
    plugins: GotunnelPluginManager,
    initial_tunnels: list[Any] | None = None,
    forget_on_exit: bool = False,
    on_ready: Callable[[list[dict[str, Any]]], None] | None = None,
) -> None:
    """Run a daemon in this process until it is told to stop (the `gotunnel daemon` command)."""
    from ..memory import TRIM_THRESHOLD, keep_large_blocks_mmapped

    lock_fd = acquire_daemon_lock(layout)
    keep_large_blocks_mmapped(trim=TRIM_THRESHOLD)  # a daemon runs for weeks: a threshold that never drifts (issue 19)
    tracing.configure()
    error_reports.configure(settings)
    try:
        import uvloop

        async def main() -> None:
            server = DaemonServer(layout, settings, plugins)
            server.forget_on_exit = forget_on_exit
            await server.run(initial_tunnels, on_ready)

        uvloop.run(main())
    finally:
        tracing.shutdown()  # flush the last spans
        os.close(lock_fd)
    sys.stdout.flush()
