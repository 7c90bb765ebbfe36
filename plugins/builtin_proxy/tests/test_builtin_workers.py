"""Multi-process mode: listeners inherited by workers, tables reaching every worker, restarts, and
how the connections spread over the workers (one SO_REUSEPORT socket each on Linux)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from gotunnel_core.testing import pid_gone
from builtin_helpers import (  # noqa: F401  (fixtures)
    backend_a, backend_b, echo_json, engine_factory, http_get, https_get, make_table, pki, ports, wait_for,
)


LINUX = sys.platform.startswith("linux")


def served(eng: Any) -> dict[int, int]:
    """pid -> requests that worker reported so far (its counters start at zero when it starts)."""
    return {w["pid"]: w["requests_total"] for w in eng.engine.health().extra["per_worker"]}


def listening_sockets(pid: int, port: int) -> set[int]:
    """The kernel sockets (inode numbers) process `pid` listens on at `port` (Linux)."""
    proc = psutil.Process(pid)
    conns = getattr(proc, "net_connections", proc.connections)(kind="tcp")
    return {os.stat(f"/proc/{pid}/fd/{c.fd}").st_ino for c in conns
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def burst(port: int, count: int) -> None:
    """Open `count` connections at once, then one request on each (how wrk starts its load)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n")
        for sock in socks:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in socks:
            sock.close()


def fan_out(port: int, count: int, host: str = "alpha.localhost", threads: int = 8) -> list[int]:
    """`count` requests, each on a new connection, from a thread pool: their statuses."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: http_get(port, host)[0], range(count)))


def shares_after(eng: Any, before: dict[int, int], count: int) -> dict[int, int]:
    """Each live worker's requests since `before`, once the reports add up to `count` new ones."""
    def grown() -> dict[int, int] | None:
        now = served(eng)
        delta = {pid: n - before.get(pid, 0) for pid, n in now.items()}
        return delta if sum(delta.values()) >= count else None
    return wait_for(grown, timeout=15, interval=0.2, what=f"{count} requests reported by the workers")


def assert_each_serves(delta: dict[int, int], total: int, share: float = 0.2) -> None:
    assert len(delta) == 2 and sum(delta.values()) == total, delta
    assert all(n >= share * total for n in delta.values()), f"uneven spread over the workers: {delta}"


@pytest.mark.slow
def test_workers_serve_follow_route_changes_and_restart(engine_factory, backend_a, backend_b, ports, pki):
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
        assert pid_gone(pid)


@pytest.mark.slow
@pytest.mark.parametrize("steerable", [False, True], ids=["one-socket", "steerable-pair"])
def test_workers_serve_on_the_sockets_the_daemon_hands_them(engine_factory, backend_a, ports, pki, steerable):
    """Ports 80/443 through `gotunnel ports`: with `workers = 2` the workers share the given
    sockets (a privileged helper bound them: no reuseport group of our own there; the conformance
    row `given_sockets` covers the in-process engine), and stopping the engine leaves the
    daemon's sockets listening."""
    from gotunnel_core.models import Listen
    from gotunnel_core.supervisor import ListenerSockets

    given = ListenerSockets(Listen("127.0.0.1", *ports), steer=steerable)  # no SO_REUSEPORT unless steerable
    try:
        eng = engine_factory({"workers": 2}, listeners=given)
        eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
        try:
            pids = eng.engine._workers.pids()
            assert len(pids) == 2 and eng.engine.health().extra["worker_accept"] == "shared"
            if LINUX:  # one socket bound by the helper, shared: both workers listen on that very socket
                for port in ports:
                    first, second = (listening_sockets(pid, port) for pid in pids)
                    assert len(first) == 1 and first == second
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


# ----- how the load spreads --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SO_REUSEPORT balances only on Linux; elsewhere the workers share one socket")
def test_new_connections_spread_over_both_workers(engine_factory, backend_a, ports, pki):
    """Each worker listens on a socket of its own in the port's reuseport group; 200 short
    connections from 8 threads, and 100 opened at once (as wrk does; with one shared socket a
    worker took 59-79 % of such a burst), spread over both workers."""
    eng = engine_factory({"workers": 2})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    extra = eng.engine.health().extra
    assert extra["worker_accept"] == "reuseport" and extra["workers_alive"] == 2
    for port in ports:
        first, second = (listening_sockets(pid, port) for pid in eng.engine._workers.pids())
        assert len(first) == len(second) == 1 and first != second
    before = served(eng)
    assert fan_out(ports[0], 200) == [200] * 200
    assert_each_serves(shares_after(eng, before, 200), 200)
    before = served(eng)
    burst(ports[0], 100)
    assert_each_serves(shares_after(eng, before, 100), 100, share=0.3)  # binomial: 30 % is 4 sigma off
    with ThreadPoolExecutor(8) as pool:  # HTTPS too: the HTTPS port has its own group
        statuses = list(pool.map(lambda _: https_get(ports[1], pki, "alpha.localhost")[0], range(60)))
    assert statuses == [200] * 60
    pid_of = {w["index"]: w["pid"] for w in eng.engine.health().extra["per_worker"]}
    assert len(set(pid_of.values())) == 2


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SO_REUSEPORT balances only on Linux; elsewhere the workers share one socket")
def test_reloads_under_load_reset_nothing_and_keep_both_workers_serving(engine_factory, backend_a, backend_b,
                                                                      ports, pki):
    """Two load loops (a new connection per request) run through 30 route changes: not one
    request fails, the workers are the same processes, and both still take their share."""
    eng = engine_factory({"workers": 2})
    tables = [make_table([{"name": "alpha", "backends": b.url}], *ports, pki) for b in (backend_a, backend_b)]
    eng.start(tables[0])
    pids = sorted(eng.engine._workers.pids())
    done = threading.Event()
    failures: list[str] = []
    counts = [0, 0]

    def load(slot: int) -> None:
        while not done.is_set():
            try:
                status = http_get(ports[0], "alpha.localhost")[0]
            except OSError as exc:  # a reset or a refused connection
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(f"status {status}")
            counts[slot] += 1

    loops = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(2)]
    before = served(eng)
    for t in loops:
        t.start()
    try:
        for i in range(30):
            wait_for(lambda n=5 * (i + 1): sum(counts) >= n, timeout=30, what="requests between reloads")
            eng.apply(tables[(i + 1) % 2])
    finally:
        done.set()
        for t in loops:
            t.join(15)
    assert failures == []
    assert sorted(eng.engine._workers.pids()) == pids and eng.engine._workers.restarts == 0
    total = sum(counts)
    assert_each_serves(shares_after(eng, before, total), total)
    before = served(eng)
    assert fan_out(ports[0], 100) == [200] * 100  # after the last reload, both workers still take new connections
    assert_each_serves(shares_after(eng, before, 100), 100)


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SO_REUSEPORT balances only on Linux; elsewhere the workers share one socket")
def test_killed_worker_is_restarted_on_its_socket_and_keeps_its_share(engine_factory, backend_a, ports, pki):
    """SIGKILL one worker and connect at once: the connections hashed to its socket wait in that
    socket's queue (the parent keeps it listening) and the restarted worker serves them; none is
    reset. Afterwards the new worker takes its share again."""
    eng = engine_factory({"workers": 2})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    victim = eng.engine._workers.pids()[0]
    its_socket = listening_sockets(victim, ports[0])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: pid_gone(victim),
             what="the killed worker gone")
    statuses = fan_out(ports[0], 40)  # about half of these hash to the dead worker's socket
    assert statuses == [200] * 40
    wait_for(lambda: eng.engine.health().extra["workers_alive"] == 2, timeout=15, what="the worker restarted")
    pids = eng.engine._workers.pids()
    assert victim not in pids and len(pids) == 2 and eng.engine._workers.restarts == 1
    assert its_socket in [listening_sockets(pid, ports[0]) for pid in pids]  # the same kernel socket again
    before = shares_after(eng, {}, 40)  # both reported the 40 (the victim had served none)
    assert sum(before.values()) == 40 and all(before.values()), before  # the new worker served its queue
    assert fan_out(ports[0], 200) == [200] * 200
    delta = shares_after(eng, before, 200)
    assert_each_serves(delta, 200)
    assert set(delta) == set(pids)


def test_a_taken_port_fails_start_in_one_line_and_leaves_nothing_bound(engine_factory, backend_a, ports, pki):
    """The HTTPS port is taken: start names it, starts no worker, and closes the HTTP port's
    group it had already bound (the port can be bound again at once)."""
    from gotunnel_core.errors import RuntimeFailure

    with socket.create_server(("127.0.0.1", ports[1])):
        eng = engine_factory({"workers": 2})
        with pytest.raises(RuntimeFailure, match=rf"builtin engine cannot listen on 127\.0\.0\.1:{ports[1]}: "
                                                 "the port is already in use"):
            eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
        assert eng.engine._workers is None and not psutil.Process().children()
    with socket.create_server(("127.0.0.1", ports[0])):
        pass


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SO_REUSEPORT balances only on Linux; elsewhere the workers share one socket")
def test_a_replacement_that_cannot_start_is_retried_until_it_serves(engine_factory, backend_a, ports, pki):
    """While the tunnel's certificate file is missing, a killed worker's replacements fail to
    start; they are retried (not left running idle on their socket), and once the file is back
    the connections that queued on that socket meanwhile are served."""
    eng = engine_factory({"workers": 2})
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports, pki))
    cert = Path(pki.certs["alpha"].cert)
    hidden = cert.with_name(cert.name + ".away")
    cert.rename(hidden)
    with ThreadPoolExecutor(8) as pool:
        try:
            os.kill(eng.engine._workers.pids()[0], signal.SIGKILL)
            waiting = [pool.submit(http_get, ports[0], "alpha.localhost", timeout=60) for _ in range(40)]
            wait_for(lambda: eng.engine._workers.restarts >= 2, timeout=30, what="a failed restart, retried")
        finally:
            hidden.rename(cert)  # also on failure: the waiting requests then finish before the pool closes
        assert [f.result(timeout=90)[0] for f in waiting] == [200] * 40
    wait_for(lambda: eng.engine.health().extra["workers_alive"] == 2, timeout=15, what="the worker serving again")
    assert len(eng.engine._workers.pids()) == 2
