"""The daemon's dashboard listeners: the page, the inspector's JSON API and its live event stream.

Two loopback listeners, the same pages:
- the dedicated port (`dashboard_port`, `http://gotunnel.localhost:7373/`), bound to 127.0.0.1 and
  ::1 only, so the bind address itself keeps LAN peers out;
- an ephemeral port on 127.0.0.1 that the engine's internal `gotunnel.localhost` route points at
  (`dashboard.route`): `https://gotunnel.localhost:<https_port>/` on every engine. The engine lets
  only loopback peers use `.localhost` names and `lan = false` routes; here the peer is the engine.
`guard` checks every connection and request on top of that, with each listener's own names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from importlib import resources
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from ..errors import GotunnelError
from ..logs import get_logger
from . import guard, route
from .http import BadRequest, Request, Response, error_response, json_response, read_request, response_head

if TYPE_CHECKING:
    from ..daemon.manager import TunnelManager

log = get_logger("gotunnel.dashboard")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/app.css": ("app.css", "text/css; charset=utf-8")}
_RECORD = re.compile(r"^/api/requests/(\d{1,12})$")
_REPLAY = re.compile(r"^/api/requests/(\d{1,12})/replay$")
_VERIFY = re.compile(r"^/api/requests/(\d{1,12})/verify$")
SSE_KEEPALIVE = 15.0
SSE_HEADERS = (("x-accel-buffering", "no"),)

Handler = Callable[[Request], Awaitable[Response]]


def dashboard_url(port: int) -> str:
    return f"http://gotunnel.localhost:{port}/"


class DashboardServer:
    """Serves the dashboard on 127.0.0.1 and ::1 at `dashboard_port`, and to the engine's
    `gotunnel.localhost` route on an ephemeral 127.0.0.1 port, while the daemon runs."""

    def __init__(self, manager: "TunnelManager", settings: Mapping[str, Any]) -> None:
        self.manager = manager
        self.port = int(settings["dashboard_port"])
        self.error: str | None = None
        #: The listener the engine's route points at (None until `start`, or when it failed).
        self.engine_port: int | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._engine_server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return dashboard_url(self.port)

    @property
    def engine_url(self) -> str:
        return route.engine_url(self.manager.listen)

    def info(self) -> dict[str, Any]:
        """What `ping` reports: `url` is where to open it (the engine's while it serves, else the
        dedicated port's), `dedicated_url` and `engine_url` each when served."""
        health = self.manager.engine.health() if self.manager.engine is not None else None
        routed = self.manager.dashboard_port is not None
        engine_url = self.engine_url if routed and health is not None and health.running else None
        dedicated_url = self.url if self._servers else None
        return {"url": engine_url or dedicated_url, "port": self.port, "error": self.error,
                "dedicated_url": dedicated_url, "engine_url": engine_url}

    async def start(self) -> None:
        """Bind the loopback addresses; a busy port is reported (ping, logs), never fatal to the daemon.
        Call before the manager builds its first route table: it routes to `engine_port`."""
        try:
            self._engine_server = await asyncio.start_server(partial(self._connection, via_engine=True), "127.0.0.1", 0)
            self.engine_port = int(self._engine_server.sockets[0].getsockname()[1])
        except OSError as exc:
            log.warning("dashboard not routed through the engine", error=str(exc))
        for host in ("127.0.0.1", "::1"):
            try:
                self._servers.append(await asyncio.start_server(self._connection, host, self.port))
            except OSError as exc:
                if host == "127.0.0.1":
                    self.error = f"cannot listen on 127.0.0.1:{self.port}: {exc.strerror}"
                    log.warning("dashboard not served on its own port", error=self.error)
                    break
        log.info("dashboard listening", url=self.url if self._servers else None, engine_url=self.engine_url,
                 engine_backend_port=self.engine_port)

    async def close(self) -> None:
        for server in [*self._servers, *([self._engine_server] if self._engine_server is not None else [])]:
            server.close()
        self._engine_server, self.engine_port = None, None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers = []

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                          via_engine: bool = False) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            if not peer or not guard.is_loopback(peer[0]) or not guard.same_user(peer[:2], local[:2]):
                log.warning("dashboard refused a connection", peer=str(peer))
                return
            try:
                request = await read_request(reader)
            except BadRequest as exc:
                writer.write(error_response(exc.status, str(exc)).encode())
                return
            except (asyncio.TimeoutError, OSError, ConnectionError):
                return
            host, origin = request.headers.get("host"), request.headers.get("origin")
            if via_engine:
                hosts_ok, origin_ok = (guard.engine_host_allowed(host, self.manager.listen),
                                       guard.engine_origin_allowed(origin, self.manager.listen))
            else:
                hosts_ok, origin_ok = guard.host_allowed(host, self.port), guard.origin_allowed(origin, self.port)
            if via_engine and not guard.forwarded_from_this_machine(request.headers.get("x-forwarded-for")):
                log.warning("dashboard refused a request forwarded from off this machine",
                            forwarded_for=request.headers.get("x-forwarded-for"))
                response = error_response(403, "gotunnel's dashboard answers this machine only")
            elif not hosts_ok:
                response = error_response(421, "this is gotunnel's dashboard; use "
                                          + (self.engine_url if via_engine else self.url))
            elif not origin_ok:
                response = error_response(403, "cross-origin requests are refused")
            elif request.method == "GET" and request.path == "/api/events":
                await self._events(request, writer)
                return
            else:
                response = await self._dispatch(request)
            writer.write(response.encode(head_only=request.method == "HEAD"))
            await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        try:
            if path in STATIC:
                return self._static(*STATIC[path]) if method in ("GET", "HEAD") else error_response(405, "GET only")
            if path == "/api/tunnels":
                return json_response(self.tunnels()) if method == "GET" else error_response(405, "GET only")
            if path == "/api/requests":
                return self._list(request) if method == "GET" else error_response(405, "GET only")
            if path == "/api/requests.har":
                return self._har(request) if method == "GET" else error_response(405, "GET only")
            if match := _RECORD.match(path):
                return self._detail(int(match[1]), request) if method == "GET" else error_response(405, "GET only")
            if match := _REPLAY.match(path):
                return await self._replay(int(match[1]), request) if method == "POST" else error_response(405, "POST only")
            if match := _VERIFY.match(path):
                return await self._verify(int(match[1]), request) if method == "POST" else error_response(405, "POST only")
            return error_response(404, f"no such page: {path}")
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        except GotunnelError as exc:
            return error_response(409, exc.message)
        except Exception as exc:  # noqa: BLE001 - one failed page never stops the dashboard
            log.exception("dashboard request failed", path=path)
            return error_response(500, f"internal error: {type(exc).__name__}")

    # ----- pages -------------------------------------------------------------------------------

    @staticmethod
    def _static(name: str, content_type: str) -> Response:
        data = resources.files("gotunnel_core.dashboard").joinpath("static", name).read_bytes()
        return Response(200, data, content_type)

    def tunnels(self) -> dict[str, Any]:
        """`GET /api/tunnels`: the tunnels with URLs, backends and inspection, engine state, certificates, trust."""
        status = self.manager.status()
        store = self.manager.inspector.store
        counts: dict[str, int] = {}
        for record in store.newest_first():
            counts[record.tunnel] = counts.get(record.tunnel, 0) + 1
        for tunnel in status["tunnels"]:
            tunnel["recorded"] = counts.get(tunnel["name"], 0)
            tunnel.setdefault("inspect", False)
        return {
            "tunnels": status["tunnels"],
            "engine": status["engine"],
            "listen": status["listen"],
            "certificates": status["certificates"],
            "trust": self._trust(),
            "daemon": {"pid": status["pid"], "started_at": status["started_at"]},
            "inspector": {"max_requests": self.manager.settings["inspect_max_requests"],
                          "body_limit": self.manager.settings["inspect_body_limit"], "recorded": len(store),
                          "mode": "native" if self.manager.inspector.native else "relay"},
        }

    def _trust(self) -> dict[str, Any]:
        """The trust stores gotunnel installed its CA into (the record `gotunnel trust` keeps)."""
        from ..trust import TrustRecord

        try:
            stores = TrustRecord(self.manager.layout.trust_record).load()
        except GotunnelError as exc:
            return {"error": exc.message, "stores": []}
        return {"stores": sorted(stores)}

    def _filters(self, request: Request) -> dict[str, str | None]:
        query = request.query
        return {key: query.get(key) or None for key in ("tunnel", "method", "status", "path")}

    def _list(self, request: Request) -> Response:
        """`GET /api/requests?tunnel=&method=&status=&path=&limit=`: summaries, newest first."""
        limit = _int(request.query.get("limit", "1000"), "limit")
        rows: list[dict[str, Any]] = []
        for record in self.manager.inspector.store.newest_first(**self._filters(request)):
            if len(rows) >= limit:
                break
            rows.append(record.summary())
        return json_response({"requests": rows})

    def _record(self, record_id: int) -> Any:
        record = self.manager.inspector.store.get(record_id)
        if record is None:
            raise BadRequest(404, f"no recorded request {record_id} (the inspector keeps the last "
                                  f"{self.manager.settings['inspect_max_requests']})")
        return record

    def _detail(self, record_id: int, request: Request) -> Response:
        return json_response(self._record(record_id).detail(reveal=_flag(request.query.get("reveal"))))

    async def _replay(self, record_id: int, request: Request) -> Response:
        """`POST /api/requests/ID/replay` (optional JSON body: edits {method, path, headers, body})."""
        record = self._record(record_id)
        edits = request.json()
        if edits is not None and not isinstance(edits, dict):
            raise BadRequest(400, "the replay body must be a JSON object {method, path, headers, body}")
        new = await self.manager.inspector.replay(record, edits)
        return json_response({"id": new.id, "status": new.status, "error": new.error, "replay_of": record.id})

    async def _verify(self, record_id: int, request: Request) -> Response:
        """`POST /api/requests/ID/verify` {provider, secret, tolerance?}: the webhook signature check.

        The secret is used for this one computation: never logged, stored or echoed back. Trying a
        large body's proxy rewrites takes a while, so it runs in a thread, off the daemon's loop."""
        from ..inspect.webhooks import VerifyInputError, verify_record

        record = self._record(record_id)
        query = request.json()
        if not isinstance(query, dict):
            raise BadRequest(400, 'the verify body must be a JSON object {"provider", "secret", "tolerance"}')
        unknown = sorted(set(query) - {"provider", "secret", "tolerance"})
        if unknown:
            raise BadRequest(400, f"unknown field {unknown[0]!r}: the verify body takes provider, secret, tolerance")
        provider, secret = query.get("provider", "auto"), query.get("secret")
        if not isinstance(provider, str):
            raise BadRequest(400, f"provider {provider!r}: must be stripe, github, slack or auto")
        if not isinstance(secret, str):
            raise BadRequest(400, "secret: must be a string (the webhook's signing secret)")
        try:
            result = await asyncio.to_thread(verify_record, record, secret, provider, query.get("tolerance"))
        except VerifyInputError as exc:
            raise BadRequest(400, str(exc)) from None
        return json_response({"id": record.id, **result.to_dict()})

    def _har(self, request: Request) -> Response:
        from ..inspect.har import har

        records = self.manager.inspector.store.newest_first(**self._filters(request))
        data = har(records, reveal=_flag(request.query.get("reveal")))
        return json_response(data, headers=(("content-disposition", 'attachment; filename="gotunnel.har"'),))

    async def _events(self, request: Request, writer: asyncio.StreamWriter) -> None:
        """`GET /api/events`: Server-Sent Events, one `data:` line of a request summary per change."""
        tunnel = request.query.get("tunnel")
        store = self.manager.inspector.store
        queue = store.subscribe()
        try:
            # A proxy must pass each event on at once: nginx reads X-Accel-Buffering (its
            # proxy_buffering is off for tunnels anyway), Caddy flushes text/event-stream itself.
            writer.write(response_head(200, "text/event-stream", None, SSE_HEADERS) + b"retry: 1000\n\n")
            await writer.drain()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE)
                except asyncio.TimeoutError:
                    writer.write(b": keep-alive\n\n")
                else:
                    if tunnel and event["tunnel"] != tunnel:
                        continue
                    writer.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            store.unsubscribe(queue)
            with contextlib.suppress(OSError):
                writer.close()


def _flag(raw: str | None) -> bool:
    return raw is not None and raw.lower() in ("1", "true", "yes", "on")


def _int(raw: str, name: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= 100000:
        raise BadRequest(400, f"{name}={raw!r}: must be an integer from 1 to 100000")
    return int(raw)
