"""Multi-process mode: shared listeners inherited by workers, tables reaching every worker, restarts."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    backend_a, backend_b, echo_json, engine_factory, http_get, https_get, make_table, pki, ports, wait_for,
)


@pytest.mark.slow
def test_workers_serve_follow_route_changes_and_restart(engine_factory, backend_a, backend_b, ports, pki):
    import socket

    eng = engine_factory({"workers": 2})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    try:
        pids = eng.engine._workers.pids()
        assert len(pids) == 2 and os.getpid() not in pids
        for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
            status, _, body = http_get(ports[0], "alpha.localhost")
            assert status == 200 and echo_json(body)["server"] == "A"
        with pki.client_context().wrap_socket(socket.create_connection(("127.0.0.1", ports[1]), timeout=5),
                                              server_hostname="alpha.localhost") as tls:
            tls.sendall(b"GET /tls HTTP/1.1\r\nHost: alpha.localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and b'"/tls"' in data
        wait_for(lambda: eng.engine.health().extra["requests_total"] == 41, what="stats from every worker")
        assert eng.engine.health().extra["workers_alive"] == 2

        eng.apply(make_table([{"name": "alpha", "backends": backend_b.url}], *ports))
        for _ in range(40):  # apply returned: every worker already has the new table
            assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "B"

        # a crashed worker is replaced, and the listener keeps accepting meanwhile
        os.kill(pids[0], signal.SIGKILL)
        for _ in range(20):
            assert http_get(ports[0], "alpha.localhost")[0] == 200
        wait_for(lambda: len(eng.engine._workers.pids()) == 2 and pids[0] not in eng.engine._workers.pids(),
                 timeout=15, what="worker restart")
        wait_for(lambda: eng.engine.health().extra["workers_alive"] == 2, what="two workers alive")
        assert echo_json(http_get(ports[0], "alpha.localhost")[2])["server"] == "B"
        live = eng.engine._workers.pids()
    finally:
        eng.close()
    for pid in live:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
@pytest.mark.parametrize("steerable", [False, True], ids=["one-socket", "steerable-pair"])
def test_workers_serve_on_the_sockets_the_daemon_hands_them(engine_factory, backend_a, ports, pki, steerable):
    """Ports 80/443 through `gotunnel ports`: with `workers = 2` the workers inherit the given
    sockets (the conformance row `given_sockets` covers the in-process engine), and stopping the
    engine leaves the daemon's sockets listening."""
    import socket

    from gotunnel_core.models import Listen
    from gotunnel_core.supervisor import ListenerSockets

    given = ListenerSockets(Listen("127.0.0.1", *ports), steer=steerable)  # no SO_REUSEPORT unless steerable
    try:
        eng = engine_factory({"workers": 2}, listeners=given)
        eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
        try:
            pids = eng.engine._workers.pids()
            assert len(pids) == 2
            for _ in range(20):
                status, _, body = http_get(ports[0], "alpha.localhost")
                assert status == 200 and echo_json(body)["server"] == "A"
            status, _, body = https_get(ports[1], pki, "alpha.localhost")
            assert status == 200 and echo_json(body)["server"] == "A"
            wait_for(lambda: eng.engine.health().extra["requests_total"] == 21, what="stats from the workers")
        finally:
            eng.close()
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # queued in the daemon's socket: it still listens
    finally:
        given.close()
