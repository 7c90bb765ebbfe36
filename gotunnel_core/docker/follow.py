"""Following the Docker engine from a plain thread, for `gotunnel sync --watch --docker`.

The daemon's provider lives on its asyncio loop; `sync --watch` is a synchronous poll loop, so
this follower keeps a connection and the events stream in one background thread and exposes a
counter (`generation`) that moves whenever an event may change what the labelled containers
declare. The poll loop compares it like a file fingerprint, so a burst of events between two
polls costs one sync. Same order as the provider: subscribe first, then list, so no start is
missed. When the engine goes away it says so once, keeps the containers it knew, reconnects with
exponential backoff and moves `generation` again once it is back.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import GotunnelError
from .address import ContainerView
from .client import EVENT_FILTERS, connect, describe, docker_host, labelled_containers
from .provider import BACKOFF_INITIAL, BACKOFF_MAX, affected_containers


class ContainerFollower:
    """A background thread that follows one Docker engine; `views()` is the current labelled set."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client: Any = None
        self._stream: Any = None
        self._views: dict[str, ContainerView] = {}
        self._generation = 0
        self._listing_failed = False
        #: Set once the first connection attempt is over, either way: the first sync waits for it,
        #: so restarting `sync --watch` never renders without the containers that are running.
        self.first_attempt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-follow", daemon=True)

    def start(self) -> "ContainerFollower":
        self._thread.start()
        return self

    @property
    def generation(self) -> int:
        """Moves on every event that may change the containers' tunnels, and on every reconnect."""
        return self._generation

    def views(self) -> list[ContainerView]:
        """The labelled running containers: listed now when connected, else the last ones known.

        A listing that fails while the events stream still runs moves `generation`, so the next
        poll lists again instead of keeping the last ones known until some other event; the
        failure is said once until a listing succeeds."""
        with self._lock:
            client = self._client
        if client is not None:
            try:
                fresh = labelled_containers(client)
            except Exception as exc:  # noqa: BLE001 - a lost engine: the events thread sees it and reconnects
                with self._lock:
                    self._generation += 1
                if not self._listing_failed:
                    self._say(f"warning: listing the containers failed: {describe(exc)}; keeping the routes known "
                              "so far and listing again")
                    self._listing_failed = True
            else:
                with self._lock:
                    self._views = fresh
                self._listing_failed = False
        with self._lock:
            return list(self._views.values())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            stream, client = self._stream, self._client
        _close(stream)
        _close(client)
        self._thread.join(timeout=5)

    # ----- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff, lost_said = BACKOFF_INITIAL, False
        while not self._stop.is_set():
            client: Any = None
            try:
                client = connect()
                stream = client.events(decode=True, filters=EVENT_FILTERS)
                views = labelled_containers(client)
            except GotunnelError as exc:
                reason = exc.message
            except Exception as exc:  # noqa: BLE001 - the SDK raises requests' and its own errors
                reason = f"cannot reach the Docker engine at {docker_host()}: {describe(exc)}"
                _close(client)
            else:
                with self._lock:
                    self._client, self._stream, self._views = client, stream, views
                    self._generation += 1
                self._say(f"following the Docker engine at {docker_host()}: {len(views)} labelled container(s)")
                self.first_attempt.set()
                backoff, lost_said = BACKOFF_INITIAL, False
                reason = self._follow(stream)
                with self._lock:
                    self._client, self._stream = None, None
                _close(stream)
                _close(client)
                if self._stop.is_set():
                    return
                reason = f"lost the Docker engine at {docker_host()}: {reason}"
            if not lost_said:  # once per outage: retries are not news
                self._say(f"warning: {reason}; keeping the routes known so far and retrying with backoff (up to "
                          f"{BACKOFF_MAX:g} s); start Docker or fix DOCKER_HOST")
                lost_said = True
            self.first_attempt.set()
            self._stop.wait(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _follow(self, stream: Any) -> str:
        """Move `generation` on every relevant event until the stream ends; returns why it ended."""
        try:
            for event in stream:
                with self._lock:
                    known = dict(self._views)
                if affected_containers(event, known):
                    with self._lock:
                        self._generation += 1
        except Exception as exc:  # noqa: BLE001 - any failure ends this stream; _run reconnects
            return describe(exc)
        return "the events stream ended (Docker engine stopped?)"


def _close(thing: Any) -> None:
    """Close a client or an events stream that may already be dead."""
    if thing is not None:
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


__all__ = ["ContainerFollower"]
