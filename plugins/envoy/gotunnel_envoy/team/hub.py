"""`gotunnel hub`: one stateless control-plane replica.

One gRPC port, mutual TLS (client certificates from the team CA are required): delta ADS for
the Envoy edges and the agent API for agents. All state is in etcd; the hub reads the team
(domain, CA) there at start, follows every change with one watch, issues the edges'
certificates into etcd, and keeps its agents' leases alive. Run as many as you like.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import grpc
import structlog

from gotunnel_core.certs import CertificateAuthority
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.memory import keep_large_blocks_mmapped, limit_malloc_arenas, release_free_heap
from gotunnel_core.team.agent import CONNECT_TIMEOUT, MAX_BACKOFF
from gotunnel_core.team.edgecerts import DEFAULT_VALIDITY, due, ensure_certs
from gotunnel_core.team.etcd import Etcd, unreachable
from gotunnel_core.team.etcdtls import EtcdTls
from gotunnel_core.team.identity import issue_server
from gotunnel_core.team.service import MEMBER_VALIDITY, AgentService
from gotunnel_core.team.store import TeamView, load_team

from .xds import AdsServer, XdsCache

log = structlog.get_logger("gotunnel.hub")

#: Seconds between two rounds of edge-certificate issuing (see `_cert_keeper`).
CERT_ROUND = 0.3
#: The hub's own server certificate lives this long by default (`--hub-cert-validity`); the hub
#: issues the next one when a third is left (see `ServerCertificate`).
SERVER_CERT_VALIDITY = timedelta(days=30)
#: glibc malloc arenas (see `_tune_malloc`).
MALLOC_ARENAS = 2
#: Blocks from this size up are mmapped, so freeing one returns its pages (see `_tune_malloc`).
MMAP_THRESHOLD = 256 << 10
#: Seconds without a change and with every edge served after which the hub hands its heap's
#: free pages back (see `_release_after_bursts`).
QUIET = 2.0


@dataclass
class HubOptions:
    listen: str
    etcd: str
    lease_ttl: int = 10
    edge_cert_validity: timedelta = DEFAULT_VALIDITY
    etcd_tls: EtcdTls | None = None
    hub_cert_validity: timedelta = SERVER_CERT_VALIDITY
    member_cert_validity: timedelta = MEMBER_VALIDITY
    #: Seconds before edges get answers (None: `warm_up_seconds`' default; see `serve`).
    warm_up: float | None = None

    @property
    def warm_up_seconds(self) -> float:
        """By default one lease TTL plus the longest an alive agent takes to reach a hub that
        came back (a dead hub tried first, then the longest back-off)."""
        if self.warm_up is not None:
            return self.warm_up
        return self.lease_ttl + CONNECT_TIMEOUT + MAX_BACKOFF


class ServerCertificate:
    """The hub's own certificate for `hub.<domain>`: gRPC asks `fetch` on every handshake, and
    it is issued again when a third of its life is left, so a long-running hub never serves an
    expired one (edges and agents check the team CA and the name, never the key)."""

    def __init__(self, ca: CertificateAuthority, name: str, validity: timedelta) -> None:
        self.ca, self.name, self.validity = ca, name, validity
        self.not_after = 0.0
        self.config = self._issue()

    def _issue(self) -> grpc.ServerCertificateConfiguration:
        cert, key, self.not_after = issue_server(self.ca, [self.name], self.validity)
        return grpc.ssl_server_certificate_configuration([(key, cert + self.ca.cert_pem())],
                                                         root_certificates=self.ca.cert_pem())

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None keeps the current certificate; a new configuration replaces it."""
        if not due(self.not_after, self.validity):
            return None
        try:
            self.config = self._issue()
        except Exception as exc:  # noqa: BLE001 - keep serving the current one; the next handshake retries
            log.warning("hub.server_cert_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        log.info("hub.server_cert_renewed", not_after=round(self.not_after))
        return self.config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.config, self.fetch, require_client_authentication=True)


async def _cert_keeper(etcd: Etcd, view: TeamView, ca: CertificateAuthority, team: object,
                       validity: timedelta, wake: asyncio.Event) -> None:
    """Issue and rotate edge certificates: on every name change, and periodically for expiry."""
    period = max(1.0, min(60.0, validity.total_seconds() / 12))
    while True:
        try:
            await asyncio.wait_for(wake.wait(), period)
        except asyncio.TimeoutError:
            pass
        # At most one round per CERT_ROUND: every round re-sends the changed buckets to every
        # edge, so a burst of new users shares rounds.
        await asyncio.sleep(CERT_ROUND)
        wake.clear()
        try:
            if await ensure_certs(etcd, view, ca, team, validity) < 0:  # type: ignore[arg-type]
                # Lost a race with another hub: look again once its certificates arrived
                # (with jitter, so two hubs do not keep colliding).
                await asyncio.sleep(0.05 + random.random() * 0.1)
                wake.set()
        except Exception as exc:  # noqa: BLE001 - etcd down: the next round retries
            log.warning("hub.cert_issue_failed", error=f"{type(exc).__name__}")


async def _release_after_bursts(cache: XdsCache, ads: AdsServer) -> None:
    """Once a burst (a bulk start, edges reconnecting) is sent to every edge and the team has
    been quiet for QUIET seconds, give the C heap's free pages back: glibc keeps what the
    burst's buffers freed, and an idle hub would stay that much larger."""
    seen = released = cache.generation
    while True:
        await asyncio.sleep(QUIET)
        now = cache.generation
        if now == seen and now != released and not ads.sending:
            release_free_heap()
            released = now
        seen = now


async def serve(options: HubOptions, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run the hub until `stop` is set."""
    etcd = Etcd.from_urls(options.etcd, options.etcd_tls)
    try:
        record = await load_team(etcd)
    except grpc.aio.AioRpcError as exc:
        await etcd.close()
        raise RuntimeFailure(unreachable(options.etcd, exc, options.etcd_tls)) from None
    team = record.team
    ca = CertificateAuthority.in_memory(record.ca_cert, record.ca_key)
    server_cert = ServerCertificate(ca, team.hub_name, options.hub_cert_validity)
    hub_id = f"{socket.gethostname()}:{options.listen}:{os.getpid()}"

    wake_certs = asyncio.Event()
    view = TeamView(etcd)
    cache = XdsCache(view, team)
    agents = AgentService(etcd, view, ca, team, hub_id, lease_ttl=options.lease_ttl,
                          member_validity=options.member_cert_validity)
    ads = AdsServer(cache, view)

    async def notify_streams() -> None:
        async with cache.changed:
            cache.changed.notify_all()

    def on_change(kinds: set[str]) -> None:
        cache.dirty.set()
        if "names" in kinds:
            wake_certs.set()
        if "revoked" in kinds:
            agents.revoked_sessions()
            asyncio.ensure_future(notify_streams())

    view.on_change = on_change
    server = grpc.aio.server(options=[
        # Dead agents are found by their missing pings (one lease TTL); keep-alives only
        # clean up connections, leniently, so a busy client is not cut off.
        ("grpc.keepalive_time_ms", 10000), ("grpc.keepalive_timeout_ms", 10000),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000), ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0), ("grpc.max_send_message_length", 256 << 20),
    ])
    server.add_generic_rpc_handlers((agents.handler(), ads.handler()))
    creds = server_cert.credentials()
    try:
        server.add_secure_port(options.listen, creds)
    except RuntimeError as exc:
        await etcd.close()
        raise RuntimeFailure(f"cannot listen on {options.listen}: {exc}", hint="pick a free ADDR:PORT") from None
    tasks = [asyncio.create_task(view.run()), asyncio.create_task(cache.run()), asyncio.create_task(agents.keep_leases()),
             asyncio.create_task(_cert_keeper(etcd, view, ca, team, options.edge_cert_validity, wake_certs)),
             asyncio.create_task(_release_after_bursts(cache, ads))]
    await view.ready.wait()
    cache.rebuild()
    wake_certs.set()
    await server.start()
    # Warm-up: after an outage of every hub longer than the lease TTL, etcd holds none of the
    # agents' names, and telling the edges now would blank names whose agents are alive and
    # reconnecting. So agents may re-register at once, but edges get their first answer only
    # after the warm-up (they keep serving what they have meanwhile); by then only the names
    # of agents that did not come back are removed.
    asyncio.get_running_loop().call_later(options.warm_up_seconds, ads.warm.set)
    log.warning("hub.ready", listen=options.listen, team=team.domain, hub=hub_id)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1.0)
        for task in tasks:
            task.cancel()
        await etcd.close()


def _tune_malloc() -> None:
    """Before gRPC starts its threads: cap glibc's malloc arenas at MALLOC_ARENAS (one per
    thread fragmented a hub's heap by tens of MiB, never returned), and fix the mmap threshold
    at MMAP_THRESHOLD: a response to an edge is up to RESPONSE_BYTES, and with glibc's sliding
    threshold a burst of them stayed in the heap after they were sent."""
    limit_malloc_arenas(MALLOC_ARENAS)
    keep_large_blocks_mmapped(MMAP_THRESHOLD)


def run(options: HubOptions) -> None:
    """The `gotunnel hub` process: serve until SIGTERM/SIGINT."""
    _tune_malloc()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    started = time.monotonic()
    asyncio.run(main())
    log.info("hub.stopped", after=round(time.monotonic() - started, 1))
