"""The row of `gotunnel ports`: an engine serves on listening sockets the daemon hands it
(`EngineContext.listeners`), which is how an unprivileged daemon serves on ports 80 and 443.

The daemon gets those sockets from the port broker only when it runs as a user on ports below
1024, so this row hands the engine sockets the test bound itself, in the two shapes the broker
passes on: one socket per port (a systemd socket unit) and a steerable SO_REUSEPORT pair per port
(`gotunnel ports enable` without a service manager). The engine runs in-process, through the
public `Engine` interface, exactly as the daemon drives it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from ...engine import EngineContext
from ...models import Listen
from ...supervisor.listeners import ListenerSockets
from ..engines import LoopThread, http_get, https_get, make_pki, make_table
from ..runner import free_port
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures


@behaviour("given_sockets", "Serves on listening sockets the daemon hands it (ports 80/443 without root)")
def test_serves_on_the_sockets_the_daemon_hands_it(env: Env, app: Any, tmp_path: Path) -> None:
    assert env.spec is not None
    engine_class = env.spec.engine_class
    assert engine_class.serves_given_sockets, (
        f"the {env.engine} engine neither sets `serves_given_sockets = True` nor declares the "
        "`given_sockets` capability unsupported, with the reason the daemon shows")
    one, two = app("one"), app("two")
    pki = make_pki(tmp_path / "pki", ["one", "two"])
    for steerable in (False, True):
        listen = Listen("127.0.0.1", free_port(), free_port())
        # Without SO_REUSEPORT (steerable=False) nothing else can bind these ports: an engine that
        # binds its own sockets instead of serving on these fails to start.
        given = ListenerSockets(listen, steer=steerable)
        context = EngineContext(work_dir=tmp_path / f"work-{steerable}", settings={"engine": env.engine},
                                listeners=given)
        runner = LoopThread(engine_class(context))
        try:
            runner.start(make_table([{"name": "one", "backends": one.url}],
                                    listen.http_port, listen.https_port, pki))
            _expect(http_get(listen.http_port, "one.localhost"), "one")
            _expect(https_get(listen.https_port, pki, "one.localhost"), "one")
            # A route change (a reload for external engines) keeps serving on the same sockets.
            runner.apply(make_table([{"name": "one", "backends": one.url}, {"name": "two", "backends": two.url}],
                                    listen.http_port, listen.https_port, pki))
            _expect(http_get(listen.http_port, "two.localhost"), "two")
            _expect(https_get(listen.https_port, pki, "two.localhost"), "two")
        finally:
            runner.close()
        # The engine closed only its own copies: the daemon's sockets still listen, and a
        # connection made now waits in their backlog for the next engine.
        try:
            for port in (listen.http_port, listen.https_port):
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                       for port in (listen.http_port, listen.https_port)
                       for s in _sockets(given, port))
        finally:
            given.close()


def _expect(answer: tuple[int, dict[str, str], bytes], name: str) -> None:
    status, _, body = answer
    assert status == 200, body[:300]
    assert body_json(body)["server"] == name


def _sockets(given: ListenerSockets, port: int) -> list[socket.socket]:
    sides = 2 if given.steerable else 1
    return [given.socket_of(port, side) for side in range(sides)]
