"""Delta (incremental) ADS: every edge's listeners, clusters, routes and secrets on one stream.

`XdsCache` turns the hub's `TeamView` into resources (rebuilding only what changed: a route's
cluster, its group's route configuration, a group's secret) and keeps a log of which names
changed in which generation. Each edge stream (`AdsServer`) remembers the version it holds of
every resource and, on a new generation, sends exactly the changed ones and the removals, in
the order Envoy needs (clusters and secrets before the listeners and routes naming them).

Nothing waits for ACKs: versions are content hashes, so a NACKed resource is simply resent
when its content changes, and a reconnecting edge (another hub, or this one restarted) lists
what it holds in `initial_resource_versions` and gets only the difference.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import ChainMap, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Mapping

import grpc
import structlog

from gotunnel_core.models import Listen, parse_bind, parse_port
from gotunnel_core.team.identity import Team
from gotunnel_core.team.service import peer_member
from gotunnel_core.team.store import Route, TeamView

from . import protos
from .resources import (CLUSTER, LISTENER, ORDER, ROUTE, SCOPED, SECRET, Resource, cluster, listeners, name_routes,
                        redirect_routes, route_name, scope, scope_name, secret, secret_name)

log = structlog.get_logger("gotunnel.hub")

#: How long the cache waits after a change for more changes (one push for a burst).
COALESCE = 0.02
#: A response carries resources up to about this many bytes; more go in further responses
#: (each stream holds one in flight: 25 edge streams x 1 MiB showed in a hub's peak RSS).
RESPONSE_BYTES = 256 << 10
#: Changes remembered per generation; an older stream compares everything once.
LOG_LENGTH = 4096


@dataclass
class XdsCache:
    """The resources every edge shares, plus the per-listen listeners built on demand."""

    view: TeamView
    team: Team
    generation: int = 0
    shared: dict[str, dict[str, Resource]] = field(
        default_factory=lambda: {CLUSTER: {}, ROUTE: {}, SCOPED: {}, SECRET: {}})
    changes: deque[tuple[int, str, frozenset[str]]] = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _cluster_keys: dict[str, Route] = field(default_factory=dict)
    _secret_keys: dict[str, tuple[str, float]] = field(default_factory=dict)
    _per_listen: dict[Listen, dict[str, dict[str, Resource]]] = field(default_factory=dict)

    def _record(self, type_url: str, names: set[str]) -> None:
        if names:
            self.changes.append((self.generation, type_url, frozenset(names)))

    @staticmethod
    def _put(store: dict[str, Resource], res: Resource, changed: set[str]) -> None:
        old = store.get(res.name)
        if old is None or old.version != res.version:
            store[res.name] = res
            changed.add(res.name)

    def rebuild(self) -> bool:
        """Bring the shared resources in line with the view; True when anything changed.

        Incremental: only the names and certificates the view reports as changed since the last
        call are looked at (a full team of 10,000 names costs nothing per change)."""
        team = self.team
        changed: dict[str, set[str]] = {CLUSTER: set(), ROUTE: set(), SCOPED: set(), SECRET: set()}
        names, certs = self.view.take_changes()
        clusters, routes, scopes, secrets = (self.shared[t] for t in (CLUSTER, ROUTE, SCOPED, SECRET))
        for fqdn in names:
            route = self.view.routes.get(fqdn)
            if route is None:
                if self._cluster_keys.pop(fqdn, None) is not None:
                    for store, name, kind in ((clusters, "tunnel_" + team.local_part(fqdn), CLUSTER),
                                              (routes, route_name(fqdn), ROUTE), (scopes, scope_name(fqdn), SCOPED)):
                        store.pop(name, None)
                        changed[kind].add(name)
                continue
            if self._cluster_keys.get(fqdn) != route:
                self._cluster_keys[fqdn] = route
                self._put(clusters, cluster(team, route), changed[CLUSTER])
                self._put(routes, name_routes(team, route), changed[ROUTE])
                self._put(scopes, scope(team, fqdn), changed[SCOPED])
        for key in certs:
            cert = self.view.certs.get(key)
            name = secret_name(key)
            if cert is not None:
                if self._secret_keys.get(key) != (cert.cert, cert.not_after):
                    self._secret_keys[key] = (cert.cert, cert.not_after)
                    self._put(secrets, secret(cert), changed[SECRET])
            elif self._secret_keys.pop(key, None) is not None:
                secrets.pop(name, None)
                changed[SECRET].add(name)
        if not any(changed.values()):
            return False
        self.generation += 1
        for type_url, names_changed in changed.items():
            self._record(type_url, names_changed)
        return True

    def per_listen(self, listen: Listen) -> dict[str, dict[str, Resource]]:
        """The listeners and the redirect route of edges listening on `listen` (they never change)."""
        cached = self._per_listen.get(listen)
        if cached is None:
            redirect = redirect_routes(listen)
            cached = {LISTENER: {r.name: r for r in listeners(self.team, listen)}, ROUTE: {redirect.name: redirect}}
            self._per_listen[listen] = cached
        return cached

    def resources(self, type_url: str, listen: Listen) -> Mapping[str, Resource]:
        own = self.per_listen(listen).get(type_url, {})
        shared = self.shared.get(type_url, {})
        return ChainMap(own, shared) if own else shared

    def changed_since(self, generation: int) -> dict[str, set[str]] | None:
        """Names changed after `generation` by type, or None when the log no longer reaches back."""
        if generation >= self.generation:
            return {}
        if not self.changes or self.changes[0][0] > generation + 1:
            return None
        out: dict[str, set[str]] = {}
        for gen, type_url, names in reversed(self.changes):  # newest first: stop at what the stream has
            if gen <= generation:
                break
            out.setdefault(type_url, set()).update(names)
        return out

    async def run(self) -> None:
        """Rebuild after every burst of view changes and wake the streams."""
        while True:
            await self.dirty.wait()
            await asyncio.sleep(COALESCE)
            self.dirty.clear()
            if self.rebuild():
                async with self.changed:
                    self.changed.notify_all()


def _listen_of(node: Any) -> Listen:
    """The edge's ports, from its node metadata (`gotunnel edge` writes them there)."""
    fields = node.metadata.fields
    try:
        return Listen(parse_bind(fields["bind"].string_value or "0.0.0.0"),
                      parse_port(int(fields["http_port"].number_value or 80)),
                      parse_port(int(fields["https_port"].number_value or 443)))
    except Exception:  # noqa: BLE001 - a node without our metadata gets the default ports
        return Listen("0.0.0.0", 80, 443)


@dataclass
class _Subscription:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    sent: dict[str, str] = field(default_factory=dict)
    started: bool = False

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass
class AdsServer:
    """`envoy.service.discovery.v3.AggregatedDiscoveryService`, delta variant only."""

    cache: XdsCache
    view: TeamView
    streams: int = 0
    #: Streams sending responses now (0: every edge has what the hub has; see `hub`'s trimming).
    sending: int = 0
    nonces: Any = field(default_factory=lambda: itertools.count(1))
    #: Set once the hub's warm-up is over (see `hub.serve`): until then a new stream is held
    #: without an answer, and its edge keeps serving the configuration it has.
    warm: asyncio.Event = field(default_factory=asyncio.Event)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("envoy.service.discovery.v3.AggregatedDiscoveryService", {
            # Responses are pre-encoded bytes (see `Resource.wire`).
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.delta, protos.DeltaDiscoveryRequest.FromString, bytes),
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.sotw, lambda raw: raw, lambda raw: raw),
        })

    async def sotw(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "gotunnel hubs speak delta xDS only (use DELTA_GRPC)")

    async def _check(self, context: grpc.aio.ServicerContext) -> str:
        try:
            member = peer_member(context)
        except Exception as exc:  # noqa: BLE001
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not a team member: {exc}")
        if member.role != "edge":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"a {member.role} certificate cannot subscribe")
        if member.name in self.view.revoked:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"member {member.name!r} was revoked")
        if not self.view.ready.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this hub has not read the team from etcd yet")
        return member.name

    async def delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        member = await self._check(context)
        await self.warm.wait()
        subs: dict[str, _Subscription] = {}
        listen: Listen | None = None
        generation = self.cache.generation
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await inbox.put(request)
            finally:
                await inbox.put(None)

        async def wait_change() -> None:
            async with self.cache.changed:
                await self.cache.changed.wait_for(lambda: self.cache.generation > generation or member in self.view.revoked)

        reader = asyncio.create_task(read())
        self.streams += 1
        try:
            while True:
                getter = asyncio.create_task(inbox.get())
                waiter = asyncio.create_task(wait_change())
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                for task in (getter, waiter):
                    if task not in done:
                        task.cancel()
                if member in self.view.revoked:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"member {member!r} was revoked")
                wanted: dict[str, set[str] | None] = {}  # type -> names to compare (None: all)
                if getter in done:
                    request = getter.result()
                    if request is None:
                        return
                    if listen is None:
                        listen = _listen_of(request.node)
                    if request.error_detail.code:
                        log.warning("hub.nack", edge=member, type=request.type_url, error=request.error_detail.message[:300])
                    if request.type_url in ORDER:
                        sub = subs.setdefault(request.type_url, _Subscription())
                        asked = self._subscribe(sub, request)
                        if asked is None or asked:  # not a bare ACK or NACK (versions tell the rest)
                            wanted[request.type_url] = asked
                if self.cache.generation > generation:
                    # Changes since this stream's last look, merged with what a request asked.
                    changed = self.cache.changed_since(generation)
                    generation = self.cache.generation
                    for type_url in subs:
                        if type_url in wanted and wanted[type_url] is None:
                            continue
                        more = None if changed is None else changed.get(type_url, set())
                        wanted[type_url] = None if more is None else (wanted.get(type_url) or set()) | more
                assert listen is not None or not wanted
                for type_url in [t for t in ORDER if t in wanted]:
                    sub = subs[type_url]
                    names = wanted[type_url]
                    if names is not None and not names and sub.started:
                        continue
                    if not sub.started:
                        names = None  # a subscription's first answer compares everything once
                    responses = self._diff(type_url, sub, listen, names)
                    sub.started = True
                    self.sending += 1
                    try:
                        for response in responses:
                            yield response  # one at a time: gRPC flow control paces a slow edge
                    finally:
                        self.sending -= 1
        finally:
            self.streams -= 1
            reader.cancel()

    @staticmethod
    def _subscribe(sub: _Subscription, request: Any) -> set[str] | None:
        """Apply a request to its subscription; the names to compare now (None: all of them).

        Most requests are ACKs, which change nothing: comparing every resource on every ACK made
        a burst cost O(names x responses) per edge."""
        subscribe = list(request.resource_names_subscribe)
        if not sub.started and not subscribe and request.type_url in (LISTENER, CLUSTER, SCOPED):
            sub.wildcard = True  # a first request naming nothing: the legacy wildcard
        for name in subscribe:
            if name == "*":
                sub.wildcard = True
            else:
                sub.names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                sub.wildcard = False
            sub.names.discard(name)
            sub.sent.pop(name, None)
        for name, version in request.initial_resource_versions.items():
            sub.sent[name] = version
        if not sub.started or "*" in subscribe or request.initial_resource_versions:
            return None
        return set(subscribe)

    def _diff(self, type_url: str, sub: _Subscription, listen: Listen | None, names: set[str] | None) -> Iterator[bytes]:
        """The responses bringing this subscription up to date (none when it already is), each
        of at most about RESPONSE_BYTES: a stream holds one response in flight, so a slow edge
        that missed a burst costs the hub a few hundred KiB, not a copy of the whole team."""
        desired = self.cache.resources(type_url, listen) if listen is not None else {}
        if names is None or "*" in names:
            names = set(desired) | set(sub.sent)
        updates: list[Resource] = []
        removed = []
        for name in names:
            res = desired.get(name)
            if res is not None and sub.wants(name):
                if sub.sent.get(name) != res.version:
                    updates.append(res)
                    sub.sent[name] = res.version
            elif name in sub.sent:
                removed.append(name)
                del sub.sent[name]
        if not updates and not removed:
            return iter(())
        return self._responses(type_url, updates, removed)

    def _responses(self, type_url: str, updates: list[Resource], removed: list[str]) -> Iterator[bytes]:
        """`updates` and `removed` as responses of about RESPONSE_BYTES, each unpacked and joined
        only when its turn comes (so at most one is in memory per stream)."""
        chunk: list[bytes] = []
        size = 0
        # Lazily: a tuple of every update's wire bytes unpacked the whole batch at once, per
        # stream (3,000 route configurations are 22 MiB unpacked, times 50 edges in a bulk start).
        for wire in itertools.chain((res.wire for res in updates), (b"",)):
            if wire and (not size or size + len(wire) <= RESPONSE_BYTES):
                chunk.append(wire)
                size += len(wire)
                continue
            head = protos.DeltaDiscoveryResponse(type_url=type_url, removed_resources=removed, nonce=str(next(self.nonces)),
                                                 system_version_info=str(self.cache.generation))
            chunk.insert(0, head.SerializeToString())
            yield b"".join(chunk)  # one copy of the response, not two
            removed = []
            chunk, size = [wire], len(wire)
            if not wire:
                return
