"""The Docker provider: running containers with `gotunnel.*` labels become tunnels, live.

The daemon follows the Docker events stream (`docker` SDK) in a thread and re-inspects a
container whenever it starts, stops, is renamed or joins/leaves a network; every change hands
the tunnel manager the complete list again (`set_provided`), so the route table always equals
"what the running containers declare". The stream is opened before the initial listing, so no
start between the two is missed. When the Docker engine goes away (restart, upgrade) the
provider keeps the tunnels it had, reconnects with exponential backoff and resyncs from a fresh
listing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Iterable, Mapping

from ..errors import GotunnelError, RuntimeFailure
from ..logs import get_logger
from ..models import Backend, HealthCheck, Tunnel
from ..providers import ProvidedTunnel, ProviderProblem
from .address import ContainerView, choose_port, local_networks, resolve
from .client import EVENT_FILTERS, connect, describe, labelled_containers
from .labels import has_tunnel_labels, parse_labels

log = get_logger("gotunnel.docker")

#: Container events after which its tunnels may differ (others, like exec_*, never change them).
CONTAINER_ACTIONS = {"start", "restart", "die", "stop", "kill", "destroy", "pause", "unpause", "rename", "update"}
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
_END = object()


def build_tunnels(views: Iterable[ContainerView], explainer_url: str,
                  local: list[Any]) -> tuple[list[ProvidedTunnel], list[ProviderProblem]]:
    """What a set of running containers declares: the tunnels to serve and the labels refused.

    Containers are taken oldest first, so of two containers naming the same tunnel the one that
    was there first keeps it and the other is reported.
    """
    tunnels: list[ProvidedTunnel] = []
    problems: list[ProviderProblem] = []
    owner: dict[str, str] = {}
    for view in sorted(views, key=lambda v: (v.created, v.id)):
        labelled, label_problems = parse_labels(view.labels)
        problems += [ProviderProblem("docker", view.origin, str(p)) for p in label_problems]
        for item in labelled:
            if item.name in owner:
                problems.append(ProviderProblem("docker", view.origin, (
                    f"label {item.label('name')}={item.name!r}: duplicate tunnel name; {owner[item.name]} already serves it"),
                    conflict=True))
                continue
            owner[item.name] = view.origin
            port, why = choose_port(view, item.port)
            if port is None:
                tunnels.append(_explained(item, view, explainer_url, f"{view.origin} {why}",
                                          f"add the label {item.label('port')}=PORT"))
                continue
            resolution = resolve(view, port, local)
            if resolution.url is None:
                tunnels.append(_explained(item, view, explainer_url, resolution.reason, resolution.fix))
                continue
            health = HealthCheck(path=item.health) if item.health else None
            tunnel = Tunnel(item.name, (Backend.parse(resolution.url),), https=item.https, health=health)
            tunnels.append(ProvidedTunnel(tunnel, "docker", view.origin))
    return tunnels, problems


def _explained(item: Any, view: ContainerView, explainer_url: str, problem: str, fix: str) -> ProvidedTunnel:
    """A tunnel nothing can reach: served by the daemon's explainer, which says why on a 502 page."""
    tunnel = Tunnel(item.name, (Backend.parse(explainer_url),), https=item.https)
    return ProvidedTunnel(tunnel, "docker", view.origin, problem=problem, fix=fix)


class DockerProvider:
    """Follows one Docker engine for the tunnel manager."""

    name = "docker"

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.client: Any = None
        self.containers: dict[str, ContainerView] = {}
        self.connected_since: float | None = None
        self.error: str | None = None
        self.retry_in: float | None = None
        self._stream: Any = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._reported: set[str] = set()

    # ----- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, list the running containers and publish their tunnels (raises RuntimeFailure)."""
        client = await asyncio.to_thread(connect)
        try:
            # Subscribe first: a container started while we list is then seen in the stream.
            stream = await asyncio.to_thread(client.events, decode=True, filters=EVENT_FILTERS)
            labelled = await asyncio.to_thread(labelled_containers, client)
        except Exception as exc:  # noqa: BLE001 - the SDK raises requests' and its own errors
            await asyncio.to_thread(client.close)
            raise RuntimeFailure(f"the Docker engine stopped answering: {describe(exc)}") from None
        self.client, self._stream = client, stream
        self.containers = labelled
        self.connected_since, self.error, self.retry_in = time.time(), None, None
        threading.Thread(target=self._read_events, args=(stream,), name="docker-events", daemon=True).start()
        log.info("following the Docker engine", containers=sorted(v.name for v in self.containers.values()))
        await self.publish()

    async def run(self) -> None:
        """Apply events as they come; on a lost connection, reconnect with backoff and resync."""
        backoff = BACKOFF_INITIAL
        while True:
            if self.client is None:
                try:
                    await self.start()
                    backoff = BACKOFF_INITIAL
                except GotunnelError as exc:
                    self.error, self.retry_in = exc.message, backoff
                    log.warning("Docker engine unreachable; retrying", error=exc.message, retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
                    continue
            reason = await self._follow()
            log.warning("lost the Docker events stream; reconnecting", reason=reason)
            await self._disconnect(reason)

    async def close(self) -> None:
        await self._disconnect("provider stopped")

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.client is not None,
            "connected_since": self.connected_since,
            "error": self.error,
            "retry_in": self.retry_in,
            "containers": sorted(v.origin for v in self.containers.values()),
        }

    # ----- internals ------------------------------------------------------------------------------

    def _read_events(self, stream: Any) -> None:
        """Thread: hand every event to the loop; a sentinel with the reason when the stream ends."""
        loop = self.manager.loop
        reason = "the stream ended (Docker engine stopped?)"
        try:
            for event in stream:
                loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except Exception as exc:  # noqa: BLE001 - any failure ends this stream; run() reconnects
            reason = describe(exc)
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, (_END, stream, reason))
        except RuntimeError:  # the loop is closed: the daemon is gone
            pass

    async def _follow(self) -> str:
        """Apply event batches until the current stream ends; returns why it ended."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            ids: set[str] = set()
            for event in batch:
                if isinstance(event, tuple) and event and event[0] is _END:
                    if event[1] is self._stream:
                        if ids:
                            await self._refresh(ids)
                        return str(event[2])
                    continue  # the end of a stream we already replaced
                ids |= affected_containers(event, self.containers)
            if ids:
                await self._refresh(ids)

    async def _refresh(self, ids: set[str]) -> None:
        from docker.errors import DockerException, NotFound

        for cid in ids:
            try:
                attrs = (await asyncio.to_thread(self.client.containers.get, cid)).attrs
            except NotFound:
                self.containers.pop(cid, None)
                continue
            except DockerException as exc:
                log.warning("could not inspect a container", container=cid[:12], error=describe(exc))
                continue
            view = ContainerView.from_inspect(attrs)
            if view.running and has_tunnel_labels(view.labels):
                self.containers[view.id] = view
            else:
                self.containers.pop(view.id, None)
        await self.publish()

    async def publish(self) -> None:
        """Hand the manager the tunnels of every followed container."""
        explainer = await self.manager.explainer_url()
        tunnels, problems = build_tunnels(self.containers.values(), explainer, local_networks())
        for problem in problems:
            key = f"{problem.origin}|{problem.problem}"
            if key not in self._reported:
                log.warning("container label refused", container=problem.origin, problem=problem.problem)
        for item in tunnels:
            key = f"{item.origin}|{item.problem}"
            if item.problem and key not in self._reported:
                log.warning("container unreachable", tunnel=item.tunnel.name, problem=item.problem, fix=item.fix)
        self._reported = {f"{p.origin}|{p.problem}" for p in problems} | {f"{t.origin}|{t.problem}" for t in tunnels}
        try:
            await self.manager.set_provided("docker", tunnels, problems)
        except GotunnelError as exc:
            log.error("could not serve the containers' tunnels", error=exc.message)

    async def _disconnect(self, reason: str) -> None:
        stream, client = self._stream, self.client
        self._stream, self.client = None, None
        self.connected_since, self.error = None, reason
        if stream is not None:
            try:
                await asyncio.to_thread(stream.close)
            except Exception:  # noqa: BLE001
                pass
        if client is not None:
            try:
                await asyncio.to_thread(client.close)
            except Exception:  # noqa: BLE001
                pass


def affected_containers(event: Any, followed: Mapping[str, Any]) -> set[str]:
    """Container ids whose tunnels an event may change (`followed`: the ids known to have some)."""
    if not isinstance(event, dict):
        return set()
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    action = str(event.get("Action") or event.get("status") or "")
    if event.get("Type") == "network" and action in ("connect", "disconnect"):
        cid = attributes.get("container")
        return {cid} if cid else set()
    if event.get("Type") == "container" and action in CONTAINER_ACTIONS:
        cid = actor.get("ID") or event.get("id")
        if cid and (cid in followed or has_tunnel_labels(attributes)):
            return {cid}
    return set()
