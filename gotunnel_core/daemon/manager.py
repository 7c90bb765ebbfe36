"""The tunnel manager: owns the desired state, the engine, certificates and names, in the daemon.

Every change goes through one asyncio lock: build the new route table, let the engine apply it
(which validates it, once), persist it, then notify plugins. A change the engine refuses is never
persisted and the running configuration stays.

The engine serves the user's tunnels plus those of providers (Docker containers by label, see
`gotunnel_core.providers`). Provided tunnels are not persisted, and a user's tunnel always wins
over a provided one of the same name (the provided one is then reported as a conflict).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .. import tracing
from ..certservice import CertService
from ..dashboard.route import DASHBOARD_NAME, DASHBOARD_ROW, dashboard_tunnel, engine_routes_dashboard, refuse_reserved
from ..engine import Engine, EngineContext, EngineSpec, collect_engines, find_engine
from ..errors import GotunnelError, RuntimeFailure, UsageError
from ..inspect.service import Inspector
from ..logs import get_logger
from ..memory import release_free_heap
from ..metrics.collector import DaemonMetrics, MetricsSnapshot
from ..models import Backend, Listen, RouteTable, Tunnel, parse_tunnel_name
from ..paths import StateLayout
from ..plugins import GotunnelPluginManager, call_hook
from ..providers import ProvidedTunnel, ProviderProblem
from ..state import TunnelStore
from ..urls import tunnel_urls
from .provider_host import ProviderHost

if TYPE_CHECKING:
    from ..supervisor.listeners import ListenerSockets

log = get_logger("gotunnel.daemon")

#: How often certificates are checked for renewal, and how far wall-clock time may run ahead
#: of monotonic time between two ticks before we assume the machine slept.
RENEW_CHECK_INTERVAL = 3600.0
CLOCK_TICK = 15.0
SLEEP_JUMP = 60.0


class TunnelNameTaken(UsageError):
    """A start without `force` named a tunnel that other backends already serve (exit 2, like
    every conflict with what runs: the user picks another name or says --force)."""

    def __init__(self, name: str, current: Tunnel) -> None:
        backends = ", ".join(b.url for b in current.backends)
        super().__init__(f"tunnel {name!r} is already served by {backends}",
                         hint=f"--force replaces it; or choose another name with -d NAME (`gotunnel stop {name}` frees it)")


class TunnelManager:
    """Keeps the engine serving exactly the desired tunnels."""

    def __init__(self, layout: StateLayout, settings: Mapping[str, Any], plugins: GotunnelPluginManager) -> None:
        self.layout = layout
        self.settings = settings
        self.plugins = plugins
        self.listen = Listen(settings["bind"], settings["http_port"], settings["https_port"])
        self.store = TunnelStore(layout.tunnels_file, layout.tunnels_lock)
        self.tunnels: dict[str, Tunnel] = {}
        self.table: RouteTable | None = None
        self.engine: Engine | None = None
        self.certs: CertService | None = None
        self.names: Any = None  # NameService (mDNS + hosts), set in startup
        self.started_at = time.time()
        self.metrics = DaemonMetrics(settings["engine"])
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._table_options: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        #: source -> the tunnels and refused declarations a provider handed over last
        self.provided: dict[str, list[ProvidedTunnel]] = {}
        self.provider_problems: dict[str, list[ProviderProblem]] = {}
        self.provider_host = ProviderHost(layout, settings, self, self._explain)
        self._listeners: ListenerSockets | None = None  # from the port broker, held for the daemon's life
        self.inspector = Inspector(settings)
        #: The dashboard's engine-side listener (127.0.0.1), set by the daemon before `startup` when
        #: the dashboard is on: the table then routes `gotunnel.localhost` there (`dashboard.route`).
        self.dashboard_port: int | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def startup(self) -> None:
        """Create the engine, restore the persisted tunnels and start serving them."""
        self.loop = asyncio.get_running_loop()
        specs = collect_engines(self.plugins.pm)
        spec = find_engine(specs, self.settings["engine"])
        work_dir = self.layout.engine_dir(spec.name)
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        received = await asyncio.to_thread(self._receive_listeners, spec, specs)
        context = EngineContext(
            work_dir=work_dir,
            settings=dict(self.settings),
            hook=self.plugins.hook,
            log=get_logger(f"gotunnel.engine.{spec.name}"),
            listeners=received,
        )
        # An engine that records inspected tunnels itself gets them unchanged, and the recorder.
        self.inspector.native = spec.engine_class.inspect_mode(self.settings).native
        if self.inspector.native:
            context.recorder = self.inspector.recorder
        self.engine = spec.engine_class(context)
        routed = spec.engine_class.capability(DASHBOARD_ROW)
        if self.dashboard_port is not None and not engine_routes_dashboard(routed):
            # An engine that cannot keep LAN peers off a loopback-only route never gets the dashboard's.
            log.warning("dashboard not routed through the engine", engine=spec.name, reason=routed.reason)
            self.dashboard_port = None
        self.certs = await asyncio.to_thread(CertService, self.layout, self.settings)
        from ..certservice import table_options

        self._table_options = await asyncio.to_thread(table_options, self.settings, self.layout.root)
        from ..names import NameService

        self.names = NameService(self.settings, self.layout)
        await self.names.start()
        restored = await asyncio.to_thread(self.store.load)
        self.tunnels = {t.name: t for t in restored}
        table = await self._build_table(self.tunnels.values())
        await self.engine.start(table)
        self.table = table
        # Saved only once serving works: a daemon restoring them reuses exactly these settings.
        from ..config import saved_settings

        await asyncio.to_thread(self.store.save_settings, saved_settings(self.settings))
        await self._prune_certificates()
        await self.inspector.prune(self.tunnels.values())
        for tunnel in self.tunnels.values():
            try:
                await self._publish_names([tunnel])
            except GotunnelError as exc:  # a restored name taken meanwhile: keep serving .localhost
                log.warning("name not announced", tunnel=tunnel.name, error=exc.message)
        for tunnel in self.tunnels.values():
            self._notify("gotunnel_tunnel_started", tunnel=tunnel, urls=self.urls(tunnel))
        self._tasks.append(asyncio.create_task(self._renewal_loop(), name="cert-renewal"))
        await self.provider_host.start_wanted()
        log.info("daemon ready", engine=spec.name, tunnels=sorted(self.tunnels), pid=os.getpid(),
                 providers=sorted(self.provider_host.providers))

    def _receive_listeners(self, spec: EngineSpec, specs: Mapping[str, EngineSpec]) -> ListenerSockets | None:
        """The root-bound sockets of `gotunnel ports` when our ports need them (None otherwise); an
        engine that cannot serve on them is refused with the reason it declares."""
        from ..ports.client import needs_broker, receive_listeners

        engine_class = spec.engine_class
        if needs_broker(self.listen) and not engine_class.serves_given_sockets:
            why = engine_class.capability("given_sockets").reason or "it does not serve on sockets it is given"
            able = [name for name, other in specs.items() if other.engine_class.serves_given_sockets]
            raise RuntimeFailure(
                f"the {spec.name} engine cannot serve on ports {self.listen.http_port}/{self.listen.https_port} "
                f"without root: {why}",
                hint=f"on these ports use --engine {' or '.join(sorted(able)) or '(none installed)'}, "
                     "or ports of 1024 and above (see docs/ports.md)")
        received = receive_listeners(self.listen)
        if received is not None:
            self._listeners = received
        return received

    async def shutdown(self, *, forget: bool = False) -> None:
        """Stop serving. With `forget`, the tunnels are also removed from the desired state."""
        for task in self._tasks:
            task.cancel()
        await self.provider_host.close()
        async with self._lock:
            tunnels = list(self.tunnels.values())
            if self.engine is not None:
                try:
                    await self.engine.stop()
                except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever the engine does
                    log.error("engine stop failed", error=str(exc))
            if self.names is not None:
                if forget:
                    await self._withdraw_names(tunnels)
                await self.names.close()
            for tunnel in tunnels:
                self._notify("gotunnel_tunnel_stopped", tunnel=tunnel)
            if forget:
                await asyncio.to_thread(self.store.clear)
                for tunnel in tunnels:
                    self._notify("gotunnel_tunnel_removed", tunnel=tunnel)
                self.tunnels = {}
            if self._listeners is not None:
                self._listeners.close()  # our copies; the broker keeps the ports
                self._listeners = None
            await self.inspector.close()

    # ----- operations ----------------------------------------------------------------------

    async def start_tunnels(self, raw_tunnels: list[Any], *, force: bool = True) -> list[dict[str, Any]]:
        """Add or replace tunnels; returns each with its URLs once the engine serves it.

        Without `force`, a name already served by other backends is refused (`TunnelNameTaken`)
        before anything changes: two projects that both call themselves `app` must not silently
        take each other's tunnel. The same backends again just update the tunnel's options.
        """
        from ..loops import check_not_own_listener

        new = [Tunnel.from_raw(raw) for raw in raw_tunnels]
        for tunnel in new:
            refuse_reserved(tunnel.name)  # gotunnel.localhost is the dashboard's route
        await asyncio.to_thread(check_not_own_listener, new, self.listen)
        async with self._lock:
            if not force:
                for tunnel in new:
                    current = self.tunnels.get(tunnel.name)
                    if current is not None and not current.same_backends(tunnel):
                        raise TunnelNameTaken(tunnel.name, current)
            desired = dict(self.tunnels)
            for tunnel in new:
                desired[tunnel.name] = tunnel
            fresh = [t for t in new if t.name not in self._served(self.tunnels)]
            # A tunnel whose LAN visibility changes is announced again (mDNS skips `lan = false`).
            relabelled = [self.tunnels[t.name] for t in new
                          if t.name in self.tunnels and self.tunnels[t.name].lan != t.lan]
            await self._withdraw_names(relabelled)
            # Claim the names first: a name another host answers for fails `start` before anything changes.
            announce = fresh + [desired[t.name] for t in relabelled]
            try:
                await self._publish_names(announce)
                await self._apply(desired)
            except BaseException:
                await self._withdraw_names(announce)
                await self._publish_names(relabelled)
                raise
            await asyncio.to_thread(self.store.update, lambda _: list(desired.values()))
            self.tunnels = desired
            for tunnel in new:
                self._notify("gotunnel_tunnel_created", tunnel=tunnel)
            for tunnel in new:
                self._notify("gotunnel_tunnel_started", tunnel=tunnel, urls=self.urls(tunnel))
            return [self.describe(t) for t in new]

    async def stop_tunnels(self, raw_names: list[str], if_backends: Mapping[str, list[str]] | None = None) -> list[str]:
        """Stop and forget the named tunnels; unknown names are refused before anything changes.

        With `if_backends` (name -> backend URLs), a tunnel is stopped only while it still has
        exactly those backends, and names that are gone or were replaced are skipped: how `run`
        removes the tunnel it added without touching one another command put in its place.
        """
        names = [parse_tunnel_name(n) for n in raw_names]
        async with self._lock:
            if if_backends is not None:
                wanted = {parse_tunnel_name(n): [Backend.parse(u).url for u in urls] for n, urls in if_backends.items()}
                names = [n for n in names if n in self.tunnels
                         and [b.url for b in self.tunnels[n].backends] == wanted.get(n)]
                if not names:
                    return []
            missing = [n for n in names if n not in self.tunnels]
            if missing:
                running = ", ".join(sorted(self.tunnels)) or "none"
                raise RuntimeFailure(f"no tunnel named {missing[0]!r}; running: {running}")
            desired = {n: t for n, t in self.tunnels.items() if n not in names}
            gone = [self.tunnels[n] for n in names]
            await self._apply(desired)
            await asyncio.to_thread(self.store.update, lambda _: list(desired.values()))
            self.tunnels = desired
            unserved = [t for t in gone if t.name not in self._served(desired)]
            await self._withdraw_names(unserved)
            assert self.certs is not None
            await asyncio.to_thread(self.certs.release, [t.name for t in unserved])
            await self._prune_certificates()
            for tunnel in gone:
                self._notify("gotunnel_tunnel_stopped", tunnel=tunnel)
                self._notify("gotunnel_tunnel_removed", tunnel=tunnel)
            return [t.name for t in gone]

    async def renew_certificates(self, force: Iterable[str] = ()) -> list[str]:
        """Renew due (or forced) certificates and hand the engine the new files without a restart."""
        assert self.certs is not None
        forced = {parse_tunnel_name(n) for n in force}
        async with self._lock:
            unknown = sorted(forced - set(self.tunnels))
            if unknown:
                raise UsageError(f"no tunnel named {unknown[0]!r} to renew the certificate of; "
                                 f"running: {', '.join(sorted(self.tunnels)) or 'none'}")
            due = [n for n in self.tunnels if n in forced or self.certs.issuer.due(n)]
            for name in forced:
                await asyncio.to_thread(self.certs.issuer.renew, name)
            # The dashboard's route has a certificate too: renewed with the table, not reported as a tunnel's.
            dashboard_due = self.dashboard_port is not None and self.certs.issuer.due(DASHBOARD_NAME)
            if not due and not dashboard_due and not self.certs.default_due():
                return []
            await self._apply(dict(self.tunnels))
            log.info("certificates renewed", names=due)
            return due

    # ----- providers --------------------------------------------------------------------------

    async def explainer_url(self) -> str:
        """Where provided tunnels that nothing can reach are sent (the daemon's 502 explainer)."""
        return await self.provider_host.explainer_url()

    def _explain(self, name: str) -> tuple[str, str] | None:
        for entries in self.provided.values():
            for entry in entries:
                if entry.tunnel.name == name and entry.problem:
                    return entry.problem, entry.fix or ""
        return None

    async def start_provider(self, name: str, *, persist: bool = True) -> dict[str, Any]:
        """`docker watch`: follow provider `name` now and across restarts; what it serves and refused."""
        provider = await self.provider_host.start(name, persist=persist)
        return {"provider": name, **provider.status(),
                "tunnels": [self.describe_provided(p) for p in self.provided.get(name, [])],
                "problems": [p.to_dict() for p in self.provider_problems.get(name, [])]}

    async def stop_provider(self, name: str) -> list[str]:
        """`docker unwatch`: stop following `name` and stop serving its tunnels; returns their names."""
        gone = [p.tunnel.name for p in self.provided.get(name, [])]
        await self.provider_host.stop(name)
        await self.set_provided(name, [], [])
        return gone

    async def set_provided(self, source: str, tunnels: list[ProvidedTunnel], problems: list[ProviderProblem]) -> None:
        """Replace everything `source` provides, and serve it (a user's tunnel of the same name wins)."""
        reserved = [p for p in tunnels if p.tunnel.name == DASHBOARD_NAME]
        tunnels = [p for p in tunnels if p.tunnel.name != DASHBOARD_NAME]
        problems = [*problems, *(ProviderProblem(p.source, p.origin, f"tunnel name {DASHBOARD_NAME!r} is reserved for "
                                                 "gotunnel's dashboard; choose another name") for p in reserved)]
        async with self._lock:
            before = self._served(self.tunnels)
            old = self.provided.get(source, []), self.provider_problems.get(source, [])
            self.provided[source], self.provider_problems[source] = list(tunnels), list(problems)
            after = self._served(self.tunnels)
            if after != before:
                try:
                    await self._apply(self.tunnels)
                except BaseException:
                    self.provided[source], self.provider_problems[source] = old
                    raise
            added = [t for n, t in after.items() if before.get(n) != t]
            removed = [t for n, t in before.items() if n not in after]
            for tunnel in removed:
                self._notify("gotunnel_tunnel_stopped", tunnel=tunnel)
            for tunnel in added:
                self._notify("gotunnel_tunnel_started", tunnel=tunnel, urls=self.urls(tunnel))
            try:
                await self._withdraw_names(removed)
                await self._publish_names([t for t in added if t.name not in before])
            except GotunnelError as exc:
                log.warning("name not announced", error=exc.message)
            if added or removed:
                log.info("provided tunnels changed", source=source, added=sorted(t.name for t in added),
                         removed=sorted(t.name for t in removed))

    def _served(self, user: Mapping[str, Tunnel]) -> dict[str, Tunnel]:
        """What the engine serves: the user's tunnels, then every provided one whose name is free."""
        served = dict(user)
        for source in sorted(self.provided):
            for entry in self.provided[source]:
                served.setdefault(entry.tunnel.name, entry.tunnel)
        return served

    def conflicts(self) -> list[dict[str, Any]]:
        """Provided tunnels not served because the user has a tunnel of that name."""
        return [{"source": e.source, "origin": e.origin, "tunnel": e.tunnel.name,
                 "problem": f"tunnel {e.tunnel.name!r} is also a user tunnel (`gotunnel start`); the user's is served. "
                            f"Rename the label or `gotunnel stop {e.tunnel.name}`"}
                for entries in self.provided.values() for e in entries if e.tunnel.name in self.tunnels]

    def describe_provided(self, entry: ProvidedTunnel, problems: Mapping[str, str] | None = None) -> dict[str, Any]:
        return {**self.describe(entry.tunnel, problems), **entry.to_dict()}

    def listing(self, problems: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every served tunnel as `list --json` shows it (user and provided), sorted by name;
        `problems` as in `describe`."""
        rows = [self.describe(t, problems) for t in self.tunnels.values()]
        rows += [self.describe_provided(e, problems) for entries in self.provided.values() for e in entries
                 if e.tunnel.name not in self.tunnels]
        return sorted(rows, key=lambda row: row["name"])

    # ----- descriptions --------------------------------------------------------------------------

    def urls(self, tunnel: Tunnel) -> list[str]:
        return tunnel_urls(tunnel, self.listen, mdns=bool(self.settings["mdns"]), hosts=bool(self.settings["hosts"]))

    async def _prune_certificates(self) -> None:
        """Delete the certificates of tunnels gone for longer than `cert_keep_days`."""
        assert self.certs is not None
        keep = float(self.settings.get("cert_keep_days", 7))
        in_use = [*self._served(self.tunnels), DASHBOARD_NAME]
        removed = await asyncio.to_thread(self.certs.prune, in_use, keep)
        if removed:
            log.info("certificates of removed tunnels deleted", names=removed, kept_days=keep)

    def describe(self, tunnel: Tunnel, problems: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A tunnel as `list --json` shows it: its canonical form plus URLs; `source` says who made it.
        With `problems` (`backend_problems`), each backend also says whether it answers (`problem`)."""
        out = {**tunnel.to_dict(), "urls": self.urls(tunnel), "source": "user"}
        if problems is not None:
            out["backends"] = [{**b, "problem": problems.get(b["url"])} for b in out["backends"]]
        return out

    async def backend_problems(self, timeout: float = 0.5) -> dict[str, str]:
        """Backend URL -> why it is not serving: marked unhealthy by the engine's checks, or
        nothing accepts a TCP connection there right now. Backends that answer are left out."""
        problems: dict[str, str] = {}
        health = self.engine.health() if self.engine else None
        for entry in (health.extra.get("unhealthy_backends", ()) if health else ()):
            url, _, reason = str(entry).partition(" (")
            problems[url] = "unhealthy: " + (reason.rstrip(")") or "failed its health check")
        backends = {b.url: b for t in self._served(self.tunnels).values() for b in t.backends if b.url not in problems}

        async def probe(url: str, host: str, port: int) -> None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except asyncio.TimeoutError:
                problems[url] = "down: no answer to a connection"
            except OSError as exc:
                problems[url] = f"down: {exc.strerror or exc}"
            else:
                writer.close()

        await asyncio.gather(*(probe(url, b.host, b.port) for url, b in backends.items()))
        return problems

    def status(self, problems: Mapping[str, str] | None = None) -> dict[str, Any]:
        health = self.engine.health() if self.engine else None
        names_status = self.names.status() if self.names is not None else {}
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "engine": {
                "name": self.settings["engine"],
                "running": bool(health and health.running),
                "detail": health.detail if health else "",
                **({"extra": dict(health.extra)} if health and health.extra else {}),
            },
            "listen": {"bind": self.listen.bind, "http_port": self.listen.http_port, "https_port": self.listen.https_port},
            "tunnels": self.listing(problems),
            "providers": self.provider_host.status(),
            "problems": [p.to_dict() for source in sorted(self.provider_problems)
                         for p in self.provider_problems[source]] + self.conflicts(),
            "certificates": self.certs.expiry() if self.certs else [],
            "names": names_status,
        }

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """What a scrape shows now: the engine's counters (relabelled to tunnel names), backend
        health (the engine's view, else a TCP probe), tunnels and certificate expiry."""
        from ..metrics.probe import probe_backends
        from ..metrics.stats import EngineStats

        tunnels = sorted(self.tunnels.values(), key=lambda t: t.name)
        stats = (await self.engine.metrics() if self.engine is not None else None) or EngineStats()
        for tunnel in tunnels:
            stats.tunnel(tunnel.name)  # every tunnel has its series, zero before its first request
        backends = stats.backends if stats.backends is not None else await probe_backends(tunnels)
        certificates = []
        if self.certs is not None:
            for leaf in await asyncio.to_thread(self.certs.issuer.list_leaves):
                certificates.append((leaf.name, leaf.not_after.timestamp()))
        return MetricsSnapshot(self.settings["engine"], stats, [t.name for t in tunnels], backends, certificates)

    async def metrics_text(self) -> bytes:
        """The Prometheus text exposition of a fresh snapshot."""
        return self.metrics.render(await self.metrics_snapshot())

    # ----- internals -----------------------------------------------------------------------

    async def _publish_names(self, tunnels: list[Tunnel]) -> None:
        if self.names is not None and tunnels:
            await self.names.publish(tunnels, self.listen)

    async def _withdraw_names(self, tunnels: list[Tunnel]) -> None:
        if self.names is not None and tunnels:
            await self.names.withdraw(tunnels)

    async def _build_table(self, tunnels: Iterable[Tunnel]) -> RouteTable:
        """The engine's route table; an inspected tunnel's backends are its recording relays there,
        unless the engine records natively (`Engine.inspect_mode`); `gotunnel.localhost` routes to
        the dashboard when it is on (a route like any other)."""
        assert self.certs is not None
        served = await self.inspector.engine_tunnels(tunnels)
        if self.dashboard_port is not None:
            served = [t for t in served if t.name != DASHBOARD_NAME] + [dashboard_tunnel(self.dashboard_port)]
        return await asyncio.to_thread(self.certs.route_table, self.listen, served, self._table_options)

    async def _apply(self, desired: Mapping[str, Tunnel]) -> None:
        assert self.engine is not None
        table = await self._build_table(self._served(desired).values())
        started = time.monotonic()
        with tracing.span("engine.apply", engine=self.settings["engine"], tunnels=len(table.tunnels)):
            await self.engine.apply(table)  # validates, once (the Engine contract); refused: nothing changed
        self.metrics.observe_reload(time.monotonic() - started)
        self.table = table
        await self.inspector.prune(desired.values())
        release_free_heap()  # what building the table and its certificates freed, back to the system

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook; a failing plugin is logged and skipped, never allowed to break the daemon."""
        call_hook(self.plugins.pm, hook_name, kwargs)

    async def _renewal_loop(self) -> None:
        """Renew certificates on a timer, and at once when a wall-clock jump shows the machine slept."""
        from ..certs.names import utc_now

        # Wall time as the certificate code sees it (the testing clock offset included), so a
        # moved clock looks exactly like a machine that slept.
        last_check = time.monotonic()
        last_wall, last_mono = utc_now().timestamp(), time.monotonic()
        while True:
            await asyncio.sleep(CLOCK_TICK)
            wall, mono = utc_now().timestamp(), time.monotonic()
            slept = (wall - last_wall) - (mono - last_mono) > SLEEP_JUMP
            last_wall, last_mono = wall, mono
            if slept or mono - last_check >= RENEW_CHECK_INTERVAL:
                last_check = mono
                if slept:
                    log.info("wall clock jumped ahead (machine slept?); checking certificates")
                try:
                    await self.renew_certificates()
                    async with self._lock:
                        await self._prune_certificates()
                except GotunnelError as exc:
                    log.error("certificate renewal failed", error=exc.message)
