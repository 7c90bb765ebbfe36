"""`gotunnel agent`: publish this machine's tunnels to the team through a hub.

The agent holds one session with one hub at a time (the first that answers, in `--hub`
order, then the next on failure). It sends what it publishes whenever that changes and a ping
every quarter of the lease TTL; the hub keeps the registrations alive in etcd while it hears
from the agent. Edges reach this machine through the agent's TLS listener (`agentlink`), which
forwards to the engine's HTTP port; `--plain-http` publishes that port itself instead. Its
state (hub, published and refused names) is written to `<state>/team/agent/status.json` for
`gotunnel status --json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import structlog

from ..fsutil import atomic_write
from . import api
from . import member
from .agentlink import AgentLink
from .member import Credentials
from .status import STATUS_FILE

log = structlog.get_logger("gotunnel.agent")

#: Seconds an agent waits for one hub to answer before it tries the next.
CONNECT_TIMEOUT = 3.0
#: Longest pause between two connection attempts; with CONNECT_TIMEOUT, the longest an alive
#: agent takes to reach a hub that just came back (one dead hub tried first). Hubs wait this
#: long after a start before answering edges (see `gotunnel_envoy.team.hub`).
MAX_BACKOFF = 2.0

#: What to publish: (the port edges reach this machine's engine on, tunnel names); None = unknown yet.
Source = Callable[[], Awaitable[tuple[int, list[str]] | None]]
#: Seconds between two renewal attempts when a hub did not answer one.
RENEW_RETRY = 10.0
#: Ping at least this often; the hub's lease TTL (in its answers) makes it a quarter of the TTL.
PING_INTERVAL = 1.0


def daemon_source(layout: Any) -> Source:
    """The running daemon's tunnels and HTTP port (none while no daemon runs)."""
    from ..daemon.client import DaemonClient

    client = DaemonClient(layout)

    def read() -> tuple[int, list[str]] | None:
        info = client.ping()
        if info is None:
            return None
        names = sorted(t["name"] for t in client.request("list") if not t["name"].startswith("*."))
        return int(info["http_port"]), names

    async def source() -> tuple[int, list[str]] | None:
        return await asyncio.to_thread(read)

    return source


@dataclass
class AgentStatus:
    """What `gotunnel status --json` shows under `agent`."""

    member: str
    hubs: list[str]
    hub: str | None = None
    connected: bool = False
    published: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    since: float | None = None
    #: How edges reach this machine: `tls` (the agent's listener) or `plain-http` (the engine).
    hop: str = "tls"
    port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "member": self.member, "hubs": self.hubs, "hub": self.hub,
                "connected": self.connected, "published": self.published, "refused": self.refused,
                "error": self.error, "since": self.since, "hop": self.hop, "port": self.port, "updated": time.time()}


@dataclass
class Agent:
    creds: Credentials
    hubs: list[str]
    source: Source
    status_dir: Path | None = None
    status: AgentStatus = field(init=False)
    ping_interval: float = PING_INTERVAL
    #: The TLS listener edges reach; None publishes the engine's plain HTTP port (explicit opt-in).
    link: AgentLink | None = None
    #: After a failed renewal during a session, the next attempt waits until then (monotonic).
    _renew_retry: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.status = AgentStatus(self.creds.name, self.hubs, hop="tls" if self.link else "plain-http")

    def _publication(self, current: tuple[int, list[str]]) -> dict[str, Any]:
        """What the hub gets: the listener's port (TLS), or the engine's with `plain` set."""
        port, names = current
        if self.link is None:
            return {"port": port, "names": names, "plain": True}
        self.link.target = port
        return {"port": self.link.port, "names": names}

    def _write_status(self) -> None:
        if self.status_dir is not None:
            atomic_write(self.status_dir / STATUS_FILE, json.dumps(self.status.to_dict(), indent=2) + "\n", mode=0o600)

    async def run(self, stop: asyncio.Event) -> None:
        """Stay published until `stop`: hub after hub, with a short backoff between rounds."""
        index, backoff = 0, 0.2
        if self.link is not None:
            await self.link.start()
            self.status.port = self.link.port
        try:
            await self._run(stop, index, backoff)
        finally:
            if self.link is not None:
                await self.link.close()

    async def _run(self, stop: asyncio.Event, index: int, backoff: float) -> None:
        while not stop.is_set():
            hub = self.hubs[index % len(self.hubs)]
            try:
                await self._renew_if_due()
                await self._session(hub, stop)
                backoff = 0.2
            except grpc.aio.AioRpcError as exc:
                self.status.error = f"{hub}: {exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    log.error("agent.refused", hub=hub, detail=exc.details())
                    self.status.connected = False
                    self._write_status()
                    raise PermissionError(exc.details()) from None
            except Exception as exc:  # noqa: BLE001 - any failure: next hub
                self.status.error = f"{hub}: {type(exc).__name__}: {exc}"
            self.status.connected = False
            self.status.hub = None
            self._write_status()
            index += 1
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _renew_if_due(self) -> None:
        """A new member certificate once a third of its life is left (before a session, and
        during one: the TLS listener serves it, so it must never expire under a long session)."""
        if self.status_dir is None or not member.due(self.creds):
            return
        self.creds = await member.renew_async(self.hubs, self.creds, self.status_dir)
        if self.link is not None:
            self.link.reload()
        log.info("agent.renewed", not_after=round(self.creds.not_after))

    async def _session(self, hub: str, stop: asyncio.Event) -> None:
        options = api.channel_options(self.creds.team.hub_name)
        async with grpc.aio.secure_channel(hub, self.creds.channel_credentials(), options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
            call = channel.stream_stream(api.SESSION, request_serializer=api.encode, response_deserializer=api.decode)
            outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

            async def requests() -> AsyncIterator[dict[str, Any]]:
                while True:
                    item = await outbox.get()
                    if item is None:
                        return
                    yield item

            stream = call(requests())
            pump = asyncio.create_task(self._pump(outbox, stop))
            try:
                async for reply in stream:
                    if "error" in reply:
                        raise RuntimeError(str(reply["error"]))
                    if "pong" in reply and not self.status.connected:
                        self.status.hub, self.status.connected, self.status.error = hub, True, None
                        self._write_status()
                    if "ttl" in reply:
                        self.ping_interval = max(PING_INTERVAL, float(reply["ttl"]) / 4)
                    if "accepted" in reply:
                        self.status.hub, self.status.connected = hub, True
                        self.status.since = self.status.since or time.time()
                        self.status.published, self.status.refused = reply["accepted"], reply["refused"]
                        self.status.error = None
                        for item in reply["refused"]:
                            log.warning("agent.name_refused", name=item["name"], reason=item["reason"])
                        self._write_status()
                if pump.done() and pump.exception() is None and stop.is_set():
                    return
            finally:
                pump.cancel()

    async def _pump(self, outbox: asyncio.Queue[dict[str, Any] | None], stop: asyncio.Event) -> None:
        """Publish on every change of the source (checked every PING_INTERVAL), ping when
        nothing changed for a quarter of the lease TTL; close the stream on stop."""
        last: tuple[int, list[str]] | None = None
        sent = 0.0
        while not stop.is_set():
            if time.monotonic() >= self._renew_retry:
                try:
                    await self._renew_if_due()
                except Exception as exc:  # noqa: BLE001 - no hub answered: try again in a while
                    self._renew_retry = time.monotonic() + RENEW_RETRY
                    log.warning("agent.renew_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            current = await self.source()
            if current is not None and current != last:
                await outbox.put(self._publication(current))
                last, sent = current, time.monotonic()
            elif time.monotonic() - sent >= self.ping_interval:
                await outbox.put({"ping": True})
                sent = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), PING_INTERVAL)
            except asyncio.TimeoutError:
                pass
        await outbox.put(None)
