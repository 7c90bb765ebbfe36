"""The team's state in etcd: its layout, the name claims, and a watched in-memory view.

Every key lives under `/gotunnel/`:

    team                 {"domain", "template", "ca_cert", "ca_key"}  (written by `team init --etcd`)
    names/<fqdn>         {"owner", "user", "backend", "host"}       (the owning agent session's lease)
    agents/<member id>   {"user", "address", "hub", "since"}         (same lease)
    revoked/<name>       {"at"}                                      (`team revoke NAME`)
    enrolled/<serial>    ""                                          (a used token; lease until it expires)
    certs/bucket-NN      {"cert", "key", "not_after", "names"}       (edge certificates, shared by the hubs)

Hubs keep no state of their own: each watches this prefix (`TeamView`) and any hub can serve any
agent or edge. Names are claimed with a transaction on their mod revision, so two agents (on two
hubs) can never both own one name.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from ..errors import RuntimeFailure
from .etcd import Etcd, WatchReset
from .identity import Team

ROOT = "/gotunnel/"
TEAM_KEY = ROOT + "team"
NAMES = ROOT + "names/"
AGENTS = ROOT + "agents/"
REVOKED = ROOT + "revoked/"
ENROLLED = ROOT + "enrolled/"
CERTS = ROOT + "certs/"

log = structlog.get_logger("gotunnel.team")


@dataclass(frozen=True)
class Route:
    """A published name: where the edges send it, and the Host the agent's engine expects."""

    fqdn: str
    owner: str
    user: str
    backend: str
    host: str

    def to_json(self) -> bytes:
        return json.dumps({"owner": self.owner, "user": self.user, "backend": self.backend, "host": self.host},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, fqdn: str, raw: bytes) -> "Route":
        data = json.loads(raw)
        return cls(fqdn, str(data["owner"]), str(data["user"]), str(data["backend"]), str(data["host"]))


@dataclass(frozen=True)
class EdgeCert:
    """One edge certificate bucket (`bucket-07`): its PEMs, expiry and the names it covers."""

    group: str
    cert: str
    key: str
    not_after: float
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeamRecord:
    team: Team
    ca_cert: bytes
    ca_key: bytes

    def to_json(self) -> bytes:
        return json.dumps({"domain": self.team.domain, "template": self.team.template,
                           "ca_cert": self.ca_cert.decode(), "ca_key": self.ca_key.decode()}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "TeamRecord":
        data = json.loads(raw)
        return cls(Team(data["domain"], data["template"]), data["ca_cert"].encode(), data["ca_key"].encode())


async def publish_team(etcd: Etcd, record: TeamRecord) -> bool:
    """Store the team in etcd; True when stored now, False when this same CA already was.
    A different team already there is refused (one etcd prefix holds one team)."""
    done, current = await etcd.put_if(TEAM_KEY, record.to_json(), mod_revision=0)
    if done:
        return True
    assert current is not None
    existing = TeamRecord.from_json(current.value)
    if existing.ca_cert != record.ca_cert:
        raise RuntimeFailure(f"etcd already holds another team (domain {existing.team.domain!r})",
                             hint="use another etcd cluster, or this team's state directory")
    return False


async def load_team(etcd: Etcd) -> TeamRecord:
    kv = await etcd.get(TEAM_KEY)
    if kv is None:
        raise RuntimeFailure("etcd holds no team yet", hint="run `gotunnel team init --domain DOMAIN --etcd URL` first")
    return TeamRecord.from_json(kv.value)


class NameTaken(Exception):
    """The name belongs to another agent."""

    def __init__(self, fqdn: str, owner: str) -> None:
        super().__init__(f"{fqdn} is already published by agent {owner}")
        self.fqdn, self.owner = fqdn, owner


async def claim(etcd: Etcd, route: Route, lease: int) -> None:
    """Publish `route` under `lease` unless another owner holds its name (NameTaken)."""
    key = NAMES + route.fqdn
    revision = 0
    for _ in range(8):
        done, current = await etcd.put_if(key, route.to_json(), mod_revision=revision, lease=lease)
        if done:
            return
        if current is None:
            revision = 0
            continue
        holder = Route.from_json(route.fqdn, current.value)
        if holder.owner != route.owner:
            raise NameTaken(route.fqdn, holder.owner)
        if current.value == route.to_json() and current.lease == lease:
            return
        revision = current.mod_revision
    raise RuntimeFailure(f"could not claim {route.fqdn}: the key kept changing")


async def claim_new(etcd: Etcd, routes: list[Route], lease: int) -> bool:
    """Publish `routes` in one transaction when none of their names exists yet (an agent's first
    publication: one round trip instead of one per name); False when any does (then `claim` each)."""
    if not routes:
        return True
    return await etcd.create_all({NAMES + r.fqdn: r.to_json() for r in routes}, lease=lease)


async def release(etcd: Etcd, fqdn: str, owner: str) -> None:
    """Remove `fqdn` if `owner` still holds it."""
    current = await etcd.get(NAMES + fqdn)
    if current is not None and Route.from_json(fqdn, current.value).owner == owner:
        await etcd.delete_if(NAMES + fqdn, mod_revision=current.mod_revision)


@dataclass
class TeamView:
    """The hub's copy of the team state, kept current by one etcd watch (resumed after outages).

    `on_change(kinds)` is called (in the loop) with the set of changed kinds: `names`,
    `revoked`, `certs`, `agents`.
    """

    etcd: Etcd
    on_change: Callable[[set[str]], None] = lambda kinds: None
    routes: dict[str, Route] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    certs: dict[str, EdgeCert] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 0
    connected: bool = False
    changed_names: set[str] = field(default_factory=set)
    cert_revisions: dict[str, int] = field(default_factory=dict)
    changed_certs: set[str] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _apply(self, key: str, value: bytes | None, revision: int = 0) -> str | None:
        try:
            if key.startswith(NAMES):
                fqdn = key[len(NAMES):]
                self.changed_names.add(fqdn)
                if value is None:
                    self.routes.pop(fqdn, None)
                else:
                    self.routes[fqdn] = Route.from_json(fqdn, value)
                return "names"
            if key.startswith(REVOKED):
                name = key[len(REVOKED):]
                (self.revoked.discard(name) if value is None else self.revoked.add(name))
                return "revoked"
            if key.startswith(CERTS):
                group = key[len(CERTS):]
                self.changed_certs.add(group)
                self.cert_revisions[group] = revision
                if value is None:
                    self.certs.pop(group, None)
                    self.cert_revisions.pop(group, None)
                else:
                    data = json.loads(value)
                    self.certs[group] = EdgeCert(group, data["cert"], data["key"], float(data["not_after"]),
                                                 tuple(data.get("names", ())))
                return "certs"
            if key.startswith(AGENTS):
                member = key[len(AGENTS):]
                if value is None:
                    self.agents.pop(member, None)
                else:
                    self.agents[member] = json.loads(value)
                return "agents"
        except (ValueError, KeyError, TypeError):
            log.warning("team.bad_key", key=key)
        return None

    async def _resync(self) -> None:
        """Re-read everything (at start and after a watch could not resume) and report the diff."""
        kvs, revision = await self.etcd.get_prefix(ROOT)
        before = (dict(self.routes), set(self.revoked), dict(self.certs), dict(self.agents))
        self.changed_names |= set(self.routes)  # anything may have gone: look at every old name too
        self.changed_certs |= set(self.certs)
        self.routes, self.revoked, self.certs, self.agents = {}, set(), {}, {}
        self.cert_revisions = {}
        for kv in kvs:
            self._apply(kv.key, kv.value, kv.mod_revision)
        self.revision = revision
        changed = {kind for kind, old, new in zip(("names", "revoked", "certs", "agents"), before,
                                                   (self.routes, self.revoked, self.certs, self.agents)) if old != new}
        if changed:
            self.on_change(changed)

    def take_changes(self) -> tuple[set[str], set[str]]:
        """The names and certificate groups changed since the last call (for incremental work)."""
        names, certs = self.changed_names, self.changed_certs
        self.changed_names, self.changed_certs = set(), set()
        return names, certs

    async def run(self) -> None:
        """Follow etcd forever: list, then watch from the next revision; on a lost connection
        resume from the last revision seen, on a reset re-list. Never raises but cancellation."""
        need_list = True
        backoff = 0.1
        while True:
            try:
                if need_list:
                    await self._resync()
                    need_list = False
                self.connected = True
                self.ready.set()
                async for events in self.etcd.watch_prefix(ROOT, self.revision + 1):
                    backoff = 0.1
                    kinds = {kind for ev in events if (kind := self._apply(ev.key, ev.value, ev.revision))}
                    self.revision = max(self.revision, events[-1].revision)
                    if kinds:
                        self.on_change(kinds)
            except asyncio.CancelledError:
                raise
            except WatchReset as exc:
                log.info("team.watch_reset", reason=str(exc))
                need_list = True
            except Exception as exc:  # noqa: BLE001 - etcd unreachable: keep serving the last view
                if self.connected:
                    log.warning("team.etcd_lost", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

