"""The `builtin` engine: serves the route table from the daemon's own event loop.

Heavy imports (httptools, ssl contexts, protocols) happen in `start`, so merely registering
the engine stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Mapping

from gotunnel_core.engine import Capability, Engine, EngineContext, EngineHealth, EngineValidationError
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.inspect.native import RELAY, InspectMode
from gotunnel_core.models import RouteTable

from .config import OPTIONS

if TYPE_CHECKING:
    from gotunnel_core.metrics.stats import EngineStats, TunnelStats
    from gotunnel_core.models import Backend, Tunnel

    from .balancer import BackendState
    from .config import Settings
    from .metrics import RouteCounters
    from .router import Router
    from .state import ProxyState
    from .tls import CertSnapshot, CertStore, SniSelector
    from .upstream import Pool
    from .workers import WorkerSupervisor  # noqa: F401


class BuiltinEngine(Engine):
    """In-process reverse proxy: one HTTP and one HTTPS listener shared by every tunnel."""

    name = "builtin"
    options = OPTIONS
    capabilities = {
        "engine_validator": Capability.unsupported(
            "resolves backend names per connection: an unresolvable backend is accepted and answers 502"),
    }
    serves_given_sockets = True  # in-process (`socket_of`), and workers inherit them

    @classmethod
    def inspect_mode(cls, settings: Mapping[str, Any]) -> InspectMode:
        """Native recording in-process (`recording.py`); with workers, the daemon's relay."""
        workers = cls.resolve_options(settings)["workers"]
        if workers > 1:
            return InspectMode("relay", f"workers = {workers}: the workers are separate processes and the records "
                                        f"live in the daemon, so " + RELAY.detail)
        return InspectMode("native", "recorded inside the engine, from the bytes of its own connections to an "
                                     "inspected tunnel's backends (HTTP/1.1 and HTTP/2 clients alike); h2c backends "
                                     "are not recorded; tunnels that are not inspected take the usual path")

    def __init__(self, context: EngineContext) -> None:
        super().__init__(context)
        self.st: ProxyState | None = None
        self._servers: list[asyncio.AbstractServer] = []
        #: Shared pools by (scheme, host, port); an inspected tunnel's own by ("inspect", name, backend)
        #: and ("inspect-h1", name, backend) (see `_recorded_state`).
        self._pools: dict[tuple[Any, ...], Pool] = {}
        self._backends: dict[tuple[Any, ...], BackendState] = {}
        self._health_tasks: dict[tuple[Any, ...], asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._certs: CertStore | None = None
        self._sni: SniSelector | None = None
        self._table: RouteTable | None = None
        self._settings: Settings | None = None
        self._started_at = 0.0
        self._workers: Any = None  # WorkerSupervisor when settings.workers > 1
        self._tunnel_stats: dict[str, RouteCounters] = {}  # kept across route changes, by tunnel name

    def snapshot_settings(self) -> "Settings":
        """The proxy's settings: the validated engine options plus the core's `http2` setting."""
        from .config import Settings

        return Settings.from_options(self.option_values, http2=bool(self.context.settings.get("http2", True)))

    # -- pure -------------------------------------------------------------------------------
    def render(self, table: RouteTable) -> dict[str, str]:
        """The builtin engine has no config language: the route table as JSON documents what it serves."""
        return {"routes.json": json.dumps(table.to_dict(), indent=2, sort_keys=True) + "\n"}

    async def validate(self, table: RouteTable) -> None:
        """Check that every certificate of `table` loads (everything else was validated by the models)."""
        from .tls import CertStore

        self.snapshot_settings()
        # A running engine checks through its own cache: only new or changed files are loaded,
        # so a route change does not reload every certificate on the event loop.
        (self._certs or CertStore()).snapshot(table)

    # -- building a routing snapshot -----------------------------------------------------------
    def _build(self, table: RouteTable) -> tuple["Router", "CertSnapshot", dict[tuple[Any, ...], "BackendState"]]:
        """Everything for `table`, built aside so a failure leaves the running config untouched."""
        from .balancer import Balancer, BackendState
        from .metrics import RouteCounters
        from .router import Route, Router
        from .upstream import Pool

        assert self._certs is not None and self._settings is not None
        snapshot = self._certs.snapshot(table)
        loop = asyncio.get_running_loop()
        settings = self._settings
        states: dict[tuple[Any, ...], BackendState] = {}
        routes: dict[str, Route] = {}
        for tunnel in table.tunnels:
            tunnel_states = []
            inspected = tunnel.inspect and self.context.recorder is not None and settings.workers == 1
            for backend in tunnel.backends:
                recorded = inspected and backend.scheme != "h2c"  # h2c: HTTP/2 bytes, not recorded
                key = (tunnel.name, backend, tunnel.health, recorded)
                state = states.get(key) or self._backends.get(key)
                if recorded:
                    state = self._recorded_state(loop, tunnel, backend, state)
                elif state is None:
                    pkey = (backend.scheme, backend.host, backend.port)
                    pool = self._pools.get(pkey)
                    if pool is None:
                        pool = Pool(loop, *pkey, max_idle=settings.max_idle_upstream,
                                    idle_timeout=settings.upstream_idle_timeout, via=settings.via)
                        self._pools[pkey] = pool
                    state = BackendState(backend, pool, tunnel.health)
                states[key] = state
                tunnel_states.append(state)
            route = Route.build(tunnel, Balancer(tunnel.name, tuple(tunnel_states)), table.timeout_of(tunnel))
            route.stats = self._tunnel_stats.get(tunnel.name) or RouteCounters()
            routes[tunnel.name] = route
        return Router.build(table, routes), snapshot, states

    def _recorded_state(self, loop: asyncio.AbstractEventLoop, tunnel: "Tunnel", backend: "Backend",
                        state: "BackendState | None") -> "BackendState":
        """A backend of an inspected tunnel (`state` when it is kept): recording pools of its own
        (`recording.py`), one for HTTP/1.1 clients and one of `H1Relay`s for HTTP/2 clients, which
        record new connections with the tunnel's latest version (its health path)."""
        from .balancer import BackendState
        from .recording import RecordingH1Pool, RecordingPool

        settings = self._settings
        recorder = self.context.recorder
        assert settings is not None and recorder is not None
        options = {"max_idle": settings.max_idle_upstream, "idle_timeout": settings.upstream_idle_timeout,
                   "via": settings.via}
        pool = self._pools.get(("inspect", tunnel.name, backend))
        if not isinstance(pool, RecordingPool):
            pool = self._pools[("inspect", tunnel.name, backend)] = RecordingPool(
                loop, recorder, tunnel, backend, **options)
        h1 = self._pools.get(("inspect-h1", tunnel.name, backend))
        if not isinstance(h1, RecordingH1Pool):
            h1 = self._pools[("inspect-h1", tunnel.name, backend)] = RecordingH1Pool(
                loop, recorder, tunnel, backend, **options)
        pool.tunnel = h1.tunnel = tunnel
        if state is None:
            state = BackendState(backend, pool, tunnel.health)
            state.recorded_h1 = h1
        return state

    def _hook_enabled(self) -> bool:
        hook = self.context.hook
        if hook is None:
            return False
        try:
            return bool(hook.gotunnel_request.get_hookimpls())
        except AttributeError:
            return False

    def _sync_health(self, states: dict[tuple[Any, ...], "BackendState"]) -> None:
        """Run one check task per backend with a health check; stop tasks of removed backends."""
        from .health import run_checks

        for key in list(self._health_tasks):
            if key not in states:
                self._health_tasks.pop(key).cancel()
        for key, state in states.items():
            if state.health is not None and key not in self._health_tasks:
                self._health_tasks[key] = asyncio.get_running_loop().create_task(run_checks(state, state.health))

    def _prune_pools(self, states: dict[tuple[Any, ...], "BackendState"]) -> None:
        used = {id(s.pool) for s in states.values()} | {id(s.recorded_h1) for s in states.values()}
        for key, pool in list(self._pools.items()):
            if id(pool) not in used:
                pool.close()
                del self._pools[key]

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, table: RouteTable) -> None:

        if self.st is not None or self._workers is not None:
            raise RuntimeFailure("the builtin engine is already running")
        settings = self.snapshot_settings()
        if settings.workers > 1:
            from .workers import WorkerSupervisor

            supervisor = WorkerSupervisor(settings, self.context)
            await supervisor.start(table)
            self._workers = supervisor
            self._table = table
            self._started_at = time.monotonic()
            return
        await self.serve(table)

    async def serve(self, table: RouteTable, socks: "tuple[Any, Any] | None" = None,
                    settings: "Settings | None" = None) -> None:
        """Serve in this process, on new listeners or on already-listening `socks` (HTTP, HTTPS)."""
        from gotunnel_core import tracing

        from .protocol import ClientProtocol, TlsClientProtocol
        from .state import ProxyState
        from .tls import CertStore, SniSelector
        from .tls_transport import TlsConnection

        loop = asyncio.get_running_loop()
        self._settings = settings or self.snapshot_settings()
        http2 = self._settings.http2
        self._certs = CertStore(http2)
        router, snapshot, states = self._build(table)
        st = ProxyState(loop=loop, settings=self._settings, router=router, hook=self.context.hook,
                        hook_on=self._hook_enabled(), log=self.context.log, tracer=tracing.tracer("gotunnel.builtin"))
        if http2:
            from .h2_protocol import accept_h2
            from .h2_upstream import Upstreams

            st.h2 = Upstreams(loop, self._settings.max_idle_upstream, self._settings.upstream_idle_timeout,
                              self._settings.via)
            st.h2_accept = accept_h2
        sni = SniSelector(lambda: st.router, snapshot, http2)
        app: Any = lambda: TlsClientProtocol(st)  # noqa: E731  # what each TLS connection carries
        handshake_timeout = float(self._settings.header_timeout)
        listen = table.listen
        where: list[dict[str, Any]] = [
            {"host": listen.bind, "port": listen.http_port, "reuse_address": True, "backlog": 2048},
            {"host": listen.bind, "port": listen.https_port, "reuse_address": True, "backlog": 2048},
        ]
        if socks is None and self.context.listeners is not None:  # ports 80/443 through `gotunnel ports`
            given = self.context.listeners.dup()
            socks = (given.socket_of(listen.http_port), given.socket_of(listen.https_port))
            given.close_idle_sides()
        if socks is not None:
            where = [{"sock": socks[0]}, {"sock": socks[1]}]
        try:
            # ClientProtocol is an asyncio protocol by its methods, not by inheritance (protocol.py)
            self._servers.append(await loop.create_server(
                lambda: ClientProtocol(st, False), **where[0]))  # type: ignore[arg-type,return-value]
            # TLS by TlsConnection over the loop's TCP transport, not the loop's own TLS (tls_transport.py)
            self._servers.append(await loop.create_server(
                lambda: TlsConnection(sni.base, app, loop, handshake_timeout),  # type: ignore[arg-type,return-value]
                **where[1]))
        except OSError as exc:
            for server in self._servers:
                server.close()
            self._servers = []
            raise RuntimeFailure(
                f"builtin engine cannot listen on {listen.bind} ports {listen.http_port}/{listen.https_port}: {exc}",
                hint="another program uses the port; pick other ports or stop it",
            ) from None
        self.st, self._sni, self._table, self._backends = st, sni, table, states
        self._keep_stats(router)
        self._started_at = time.monotonic()
        self._sync_health(states)
        self._sweeper = loop.create_task(self._sweep())

    async def apply(self, table: RouteTable) -> None:
        if self._workers is not None:
            if table.listen != self._table.listen:  # type: ignore[union-attr]
                raise EngineValidationError(
                    "the builtin engine cannot change its listen address while running; restart it")
            await self._workers.apply(table)
            self._table = table
            return
        st = self.st
        if st is None:
            raise RuntimeFailure("the builtin engine is not running")
        assert self._table is not None and self._sni is not None
        if table.listen != self._table.listen:
            raise EngineValidationError("the builtin engine cannot change its listen address while running; restart it")
        router, snapshot, states = self._build(table)
        # The swap: two attribute stores, no await in between; requests already routed keep theirs.
        st.router = router
        self._sni.snapshot = snapshot
        st.hook_on = self._hook_enabled()
        self._table = table
        self._keep_stats(router)
        self._backends = states
        self._sync_health(states)
        self._prune_pools(states)
        if st.h2 is not None:
            st.h2.prune({(s.backend.scheme, s.backend.host, s.backend.port) for s in states.values()})

    async def stop(self) -> None:
        from .protocol import IDLE

        if self._workers is not None:
            workers, self._workers = self._workers, None
            await workers.stop()
            return
        st = self.st
        if st is None:
            return
        st.closing = True
        for server in self._servers:
            server.close()
        for conn in list(st.conns):
            if conn.phase == IDLE:
                conn.close()
        deadline = time.monotonic() + (self._settings.drain_timeout if self._settings else 5.0)
        while st.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(st.conns):
            conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._health_tasks.values():
            task.cancel()
        self._health_tasks.clear()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if st.h2 is not None:
            st.h2.close()
        self._servers = []
        self.st = None

    async def _sweep(self) -> None:
        """About once a second (faster for short timeouts): enforce head deadlines and idle timeouts."""
        st = self.st
        assert st is not None and self._settings is not None
        s = self._settings
        tick = max(0.05, min(1.0, s.header_timeout / 5, s.idle_timeout / 5))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(st.conns):
                conn.check_timeouts(now, s.header_timeout, s.idle_timeout)
            for pool in list(self._pools.values()):
                pool.sweep(now)
            if st.h2 is not None:
                st.h2.sweep(now)

    def stats(self) -> dict[str, Any]:
        """Counters of this process (what `health().extra` shows; summed over workers by the supervisor)."""
        st = self.st
        if st is None:
            return {}
        return {
            "connections": len(st.conns),
            "connections_total": st.connections_total,
            "requests_total": st.requests_total,
            "rejected_connections": st.rejected_total,
            "upstream_errors": st.upstream_errors,
            "idle_upstream": sum(len(p.idle) for p in self._pools.values()),
            "unhealthy_backends": sorted(
                f"{s.backend.url} ({s.last_error or 'unhealthy'})"
                for s in self._backends.values() if not s.available()
            ),
        }

    def _keep_stats(self, router: "Router") -> None:
        """The counters of the tunnels served now (a removed tunnel's counters go with it)."""
        self._tunnel_stats = {r.name: r.stats for r in (*router.exact.values(), *router.wildcard.values())}

    def _tunnels_now(self) -> "dict[str, TunnelStats]":
        """Each tunnel's counters, with its requests in flight counted from the open connections."""
        active = dict.fromkeys(self._tunnel_stats, 0)
        for conn in list(self.st.conns) if self.st is not None else ():
            streams = getattr(conn, "streams", None)  # HTTP/2: every open stream; HTTP/1.1: the active request
            routes = [s.route for s in streams.values()] if streams is not None else [getattr(conn.active, "route", None)]
            for route in routes:
                if route is not None and route.name in active:
                    active[route.name] += 1
        return {name: counters.snapshot(active[name]) for name, counters in self._tunnel_stats.items()}

    def tunnel_stats(self) -> dict[str, Any]:
        """Per-tunnel counters and backend health of this process, JSON-ready (for the worker channel)."""
        return {
            "tunnels": {name: stats.to_dict() for name, stats in self._tunnels_now().items()},
            "backends": [[key[0], state.backend.url, state.available()] for key, state in self._backends.items()],
        }

    async def metrics(self) -> "EngineStats | None":
        from gotunnel_core.metrics.stats import BackendHealth, EngineStats

        if self._workers is not None:
            return self._workers.metrics()
        if self.st is None:
            return EngineStats()
        return EngineStats(
            tunnels=self._tunnels_now(),
            backends=[BackendHealth(key[0], state.backend.url, state.available()) for key, state in self._backends.items()],
        )

    def health(self) -> EngineHealth:
        if self._workers is not None:
            extra = self._workers.stats()
            alive = extra.get("workers_alive", 0)
            return EngineHealth(
                running=alive > 0,
                detail=f"{alive}/{extra.get('workers', 0)} workers, {extra.get('connections', 0)} connections",
                extra={**extra, "uptime_s": round(time.monotonic() - self._started_at, 1)},
            )
        st = self.st
        if st is None:
            return EngineHealth(running=False)
        return EngineHealth(
            running=True,
            detail=f"{len(st.router.exact) + len(st.router.wildcard)} tunnels, {len(st.conns)} connections",
            extra={**self.stats(), "uptime_s": round(time.monotonic() - self._started_at, 1)},
        )
