"""The hub's side of the agent API (see `api`): enrolment, renewal and agent sessions.

Authentication is the TLS layer's (the hub's gRPC server requires a client certificate from
the team CA); this module reads the verified certificate and decides what that member may do:
an enrolment certificate may only enrol (once), an agent may publish, a revoked name nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, AsyncIterator

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..certs import CertificateAuthority
from ..errors import ValidationError
from ..models import parse_port, parse_tunnel_name
from . import api
from .etcd import Etcd
from .identity import ENROL_PREFIX, Member, Team, issue_member, member_of, pem
from .store import AGENTS, ENROLLED, NameTaken, Route, TeamView, claim, claim_new, release

log = structlog.get_logger("gotunnel.hub")

#: How long a member (agent or edge) certificate issued by a hub lives by default
#: (`gotunnel hub --member-cert-validity`); members renew theirs when a third is left.
MEMBER_VALIDITY = timedelta(days=30)

#: Most names one agent may publish (a bound on what one member can make every edge hold).
MAX_NAMES = 256


def peer_member(context: grpc.aio.ServicerContext) -> Member:
    """The member behind this call, from the certificate TLS already verified."""
    certs = context.auth_context().get("x509_pem_cert") or []
    if not certs:
        raise PermissionError("no client certificate")
    return member_of(x509.load_pem_x509_certificate(certs[0]))


def peer_ip(context: grpc.aio.ServicerContext) -> str:
    """`ipv4:10.0.0.2:5000` / `ipv6:[::1]:5000` -> the address."""
    peer = context.peer()
    _, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]")
    return str(ipaddress.ip_address(host.replace("%25", "%").split("%")[0]))


@dataclass
class AgentService:
    """Serves `gotunnel.team.v1.Agent` for one hub."""

    etcd: Etcd
    view: TeamView
    ca: CertificateAuthority
    team: Team
    hub_id: str
    lease_ttl: int = 10
    member_validity: timedelta = MEMBER_VALIDITY
    sessions: dict[int, "Session"] = field(default_factory=dict)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(api.SERVICE, {
            "Enrol": grpc.unary_unary_rpc_method_handler(self.enrol, api.decode, api.encode),
            "Renew": grpc.unary_unary_rpc_method_handler(self.renew, api.decode, api.encode),
            "Session": grpc.stream_stream_rpc_method_handler(self.session, api.decode, api.encode),
        })

    async def _member(self, context: grpc.aio.ServicerContext) -> Member:
        try:
            member = peer_member(context)
        except (PermissionError, ValidationError) as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not a team member: {exc}")
        if member.name in self.view.revoked:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"member {member.name!r} was revoked")
        return member

    def _public_key(self, request: dict[str, Any]) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key(str(request.get("public_key", "")).encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("the public key must be an EC key")
        return key

    def _issued(self, member_name: str, role: str, request: dict[str, Any]) -> dict[str, Any]:
        cert = issue_member(self.ca, self._public_key(request), member_name, role, self.member_validity)
        return {"cert": pem(cert).decode(), "ca": pem(self.ca.certificate).decode(), "name": member_name,
                "role": role, "domain": self.team.domain, "template": self.team.template}

    async def enrol(self, request: dict[str, Any], context: grpc.aio.ServicerContext) -> dict[str, Any]:
        member = await self._member(context)
        if not member.enrolling:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "already enrolled: use Renew")
        ttl = max(1, int(member.not_after_ts - time.time()) + 60)
        lease = await self.etcd.grant(ttl)
        done, _ = await self.etcd.put_if(f"{ENROLLED}{member.serial:x}", b"", mod_revision=0, lease=lease)
        if not done:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this enrolment token was already used")
        try:
            answer = self._issued(member.name, member.role[len(ENROL_PREFIX):], request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad public key: {exc}")
            raise  # abort() raises; this line only tells the type checker so
        log.info("hub.enrolled", member=member.name, role=answer["role"])
        return answer

    async def renew(self, request: dict[str, Any], context: grpc.aio.ServicerContext) -> dict[str, Any]:
        member = await self._member(context)
        if member.enrolling:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "enrol first")
        try:
            return self._issued(member.name, member.role, request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad public key: {exc}")
            raise  # abort() raises; this line only tells the type checker so

    async def session(self, requests: AsyncIterator[dict[str, Any]], context: grpc.aio.ServicerContext) -> None:
        member = await self._member(context)
        if member.role != "agent":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"a {member.role} certificate cannot publish names")
        session = Session(self, member, peer_ip(context))
        self.sessions[id(session)] = session
        ended = asyncio.ensure_future(session.ended.wait())
        goodbye = False
        try:
            while True:
                read = asyncio.ensure_future(context.read())
                await asyncio.wait({read, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    code = grpc.StatusCode.PERMISSION_DENIED if session.why == "revoked" else grpc.StatusCode.UNAVAILABLE
                    await context.abort(code, f"session of {member.name!r} ended: {session.why}")
                request = read.result()
                if request is grpc.aio.EOF:
                    goodbye = True
                    return
                session.last_seen = time.monotonic()
                if request.get("ping"):
                    await context.write({"pong": time.time()})
                    continue
                try:
                    await context.write(await session.publish(request))
                except ValidationError as exc:
                    await context.write({"error": exc.message})
        finally:
            ended.cancel()
            self.sessions.pop(id(session), None)
            # An agent that closed its stream (stopped) or was ended here loses its names now;
            # a broken connection keeps them for one lease TTL, so an agent that reconnects (to
            # this hub or another) takes them over without the edges ever dropping them.
            if goodbye or session.why:
                await session.close()

    def revoked_sessions(self) -> None:
        """End the sessions of members revoked since they connected (called on every change)."""
        for session in list(self.sessions.values()):
            if session.member.name in self.view.revoked:
                session.end("revoked")

    async def keep_leases(self) -> None:
        """One loop for every session of this hub: refresh all their leases on one keep-alive
        stream every third of the TTL, end sessions whose agent went silent for two TTLs,
        and re-register the names of a session whose lease etcd lost (an outage longer than
        the TTL)."""
        ttl = self.lease_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            now = time.monotonic()
            live = []
            for session in list(self.sessions.values()):
                # Two TTLs, not one: a hub whose loop runs late must not cut off live agents
                # (each would reconnect and add to the load).
                if now - session.last_seen > 2 * ttl:
                    log.info("hub.agent_silent", member=session.member.name)
                    session.end("silent")
                elif session.lease:
                    live.append(session)
            if not live:
                continue
            try:
                left = await self.etcd.keepalive_once([s.lease for s in live])
            except Exception as exc:  # noqa: BLE001 - etcd down: try again next round
                log.warning("hub.keepalive_failed", error=f"{type(exc).__name__}")
                continue
            for session in live:
                if left.get(session.lease, 0) <= 0:
                    asyncio.ensure_future(session.reclaim())


@dataclass
class Session:
    """One agent's registrations: a lease and its names, kept alive while the agent speaks."""

    service: AgentService
    member: Member
    address: str
    lease: int = 0
    names: dict[str, Route] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""

    @property
    def etcd(self) -> Etcd:
        return self.service.etcd

    def end(self, why: str) -> None:
        """Cut the session: the agent gets an error status (PERMISSION_DENIED when revoked)."""
        log.info("hub.session_end", member=self.member.name, why=why)
        self.why = why
        self.ended.set()

    async def _grant(self) -> None:
        self.lease = await self.etcd.grant(self.service.lease_ttl)
        record = {"user": self.member.name, "address": self.address, "hub": self.service.hub_id, "since": time.time()}
        await self.etcd.put(AGENTS + self.member.member_id, json.dumps(record).encode(), lease=self.lease)

    async def reclaim(self) -> None:
        """The lease is gone (etcd was away longer than the TTL): a new one, the names again."""
        log.info("hub.lease_lost", member=self.member.name)
        try:
            await self._grant()
            for route in list(self.names.values()):
                try:
                    await claim(self.etcd, route, self.lease)
                except NameTaken:
                    self.names.pop(route.fqdn, None)
        except Exception as exc:  # noqa: BLE001 - the next keep-alive round tries again
            log.warning("hub.reclaim_failed", member=self.member.name, error=f"{type(exc).__name__}")

    def _routes(self, request: dict[str, Any]) -> tuple[dict[str, Route], list[dict[str, str]]]:
        port = parse_port(request.get("port"), "port")
        host = f"[{self.address}]" if ":" in self.address else self.address
        # TLS unless the agent explicitly publishes plain HTTP (`gotunnel agent --plain-http`):
        # the edges then check the agent's certificate for its member name (see `agentlink`).
        scheme = "http" if request.get("plain") is True else "https"
        wanted: dict[str, Route] = {}
        refused: list[dict[str, str]] = []
        names = request.get("names") or []
        if not isinstance(names, list) or len(names) > MAX_NAMES:
            raise ValidationError("names", f"{len(names) if isinstance(names, list) else names}", f"must be a list of at most {MAX_NAMES}")
        for raw in names:
            try:
                name = parse_tunnel_name(raw)
                fqdn = self.service.team.published_name(name, self.member.name)
            except ValidationError as exc:
                refused.append({"name": str(raw)[:80], "reason": exc.message})
                continue
            # `NAME.local`: the agent's engine answers `.localhost` names to loopback peers only,
            # and an edge is a peer on the network (a `lan = false` tunnel stays unpublished there).
            wanted[fqdn] = Route(fqdn, self.member.member_id, self.member.name, f"{scheme}://{host}:{port}",
                                 f"{name}.local")
        return wanted, refused

    async def publish(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted, refused = self._routes(request)
        if not self.lease:
            await self._grant()
        accepted: list[str] = []
        fresh = [r for f, r in wanted.items() if self.names.get(f) != r]
        if await claim_new(self.etcd, fresh, self.lease):
            fresh = []
        for fqdn, route in wanted.items():
            if route not in fresh:  # held by this session already, or just created together
                accepted.append(fqdn)
                continue
            try:
                await claim(self.etcd, route, self.lease)
                accepted.append(fqdn)
            except NameTaken as exc:
                refused.append({"name": fqdn, "reason": f"{fqdn} is already published by agent {exc.owner}; "
                                                        "pick another name or stop it there first"})
        for fqdn in set(self.names) - set(accepted):
            await release(self.etcd, fqdn, self.member.member_id)
        self.names = {f: wanted[f] for f in accepted}
        if refused:
            log.info("hub.refused", member=self.member.name, refused=[r["name"] for r in refused])
        return {"hub": self.service.hub_id, "ttl": self.service.lease_ttl, "accepted": sorted(accepted),
                "refused": refused}

    async def close(self) -> None:
        """The agent left (or was cut off): its names go now, not after the TTL."""
        self.names = {}
        if self.lease:
            try:
                await self.etcd.revoke(self.lease)
            except Exception:  # noqa: BLE001 - etcd down: the lease expires on its own
                log.info("hub.revoke_later", member=self.member.name)
