"""Several backends per tunnel: weights, active health checks, passive ejection, live route changes."""

from __future__ import annotations

import collections
import http.client
import threading
import time

import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, EchoServer, backend_a, backend_b, echo_json, engine_factory, free_port, http_get, make_table, ports,
    wait_for,
)


def _count(port: int, n: int, host: str = "multi.localhost") -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    conn = http.client.HTTPConnection(LOCAL, port, timeout=10)
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read()
            seen[echo_json(body)["server"] if resp.status == 200 else resp.status] += 1
    finally:
        conn.close()
    return seen


def test_weighted_distribution_within_5_percent(engine_factory, backend_a, backend_b, ports):
    eng = engine_factory()
    eng.start(make_table([{"name": "multi", "backends": [
        {"url": backend_a.url, "weight": 3}, {"url": backend_b.url, "weight": 1}]}], *ports))
    seen = _count(ports[0], 2000)
    assert abs(seen["A"] / 2000 - 0.75) <= 0.05 and abs(seen["B"] / 2000 - 0.25) <= 0.05, seen


def test_refused_backend_is_ejected_and_request_retried(engine_factory, backend_a, ports):
    dead = f"http://{LOCAL}:{free_port()}"
    eng = engine_factory()
    eng.start(make_table([{"name": "multi", "backends": [dead, backend_a.url]}], *ports))
    seen = _count(ports[0], 50)
    assert seen == {"A": 50}, seen  # every request answered, the refusing backend retried around
    unavailable = eng.in_loop(lambda: [s.backend.url for s in eng.engine._backends.values() if not s.available()])
    assert unavailable == [dead]


def test_all_backends_unhealthy_gives_503_page(engine_factory, ports):
    dead1, dead2 = f"http://{LOCAL}:{free_port()}", f"http://{LOCAL}:{free_port()}"
    eng = engine_factory()
    eng.start(make_table([{"name": "multi", "backends": [dead1, dead2]}], *ports))
    assert http_get(ports[0], "multi.localhost")[0] == 502  # both refuse: both get ejected
    status, _, body = http_get(ports[0], "multi.localhost")
    assert status == 503
    assert dead1 in body.decode() and dead2 in body.decode() and "multi" in body.decode()


def test_health_checks_eject_a_killed_backend_and_readmit_it(engine_factory, backend_a, ports):
    b = EchoServer("B")
    b_port = b.port
    interval = 0.3
    eng = engine_factory()
    try:
        eng.start(make_table([{"name": "multi", "backends": [backend_a.url, b.url],
                               "health": {"path": "/health", "interval": interval, "timeout": 0.5,
                                          "healthy_threshold": 1, "unhealthy_threshold": 1}}], *ports))
        wait_for(lambda: any(r["path"] == "/health" for r in b.requests), what="first health check")

        def b_available() -> bool:
            return eng.in_loop(lambda: [s.available() for s in eng.engine._backends.values()
                                        if s.backend.port == b_port][0])

        assert b_available()
        b.close()
        killed = time.monotonic()
        wait_for(lambda: not b_available(), timeout=5, interval=0.01, what="ejection")
        assert time.monotonic() - killed <= 2 * interval + 0.5  # two intervals (+ probe time)
        assert _count(ports[0], 20) == {"A": 20}
        b = EchoServer("B", port=b_port)
        wait_for(b_available, timeout=5, what="readmission")
        assert _count(ports[0], 20)["B"] == 10
        # a backend answering its check with 500 is unhealthy too
        b.healthy = False
        wait_for(lambda: not b_available(), timeout=5, what="ejection on 500")
    finally:
        b.close()


def test_route_changes_under_concurrent_load_lose_no_request(engine_factory, backend_a, backend_b, ports):
    tables = [
        make_table([{"name": "multi", "backends": backend_a.url}], *ports),
        make_table([{"name": "multi", "backends": backend_b.url}, {"name": "other", "backends": backend_a.url}],
                   *ports),
    ]
    eng = engine_factory()
    eng.start(tables[0])
    stop = threading.Event()
    results: list[collections.Counter] = []
    errors: list[BaseException] = []

    def load() -> None:
        seen: collections.Counter = collections.Counter()
        try:
            conn = http.client.HTTPConnection(LOCAL, ports[0], timeout=10)
            while not stop.is_set():
                conn.request("GET", "/", headers={"Host": "multi.localhost"})
                resp = conn.getresponse()
                body = resp.read()
                seen[echo_json(body)["server"] if resp.status == 200 else resp.status] += 1
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        results.append(seen)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(100):
            eng.apply(tables[i % 2])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    total: collections.Counter = collections.Counter()
    for seen in results:
        total.update(seen)
    assert set(total) <= {"A", "B"}, total  # no 404/502/503 while tables switched
    assert total["A"] and total["B"], total


def test_certificates_reloaded_on_apply(engine_factory, backend_a, ports, tmp_path):
    import socket
    import ssl

    from builtin_helpers import make_pki

    first = make_pki(tmp_path / "one", ["alpha"])
    eng = engine_factory()
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports, first)
    eng.start(table)

    def serial(pki) -> int:
        ctx = pki.client_context()
        with ctx.wrap_socket(socket.create_connection((LOCAL, ports[1]), timeout=5),
                             server_hostname="alpha.localhost") as s:
            from cryptography import x509

            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number

    before = serial(first)
    # A renewal writes new files at the same paths; apply re-reads them for new handshakes.
    second = make_pki(tmp_path / "one", ["alpha"])
    with pytest.raises(ssl.SSLError):
        serial(second)  # the running listener still serves the old certificate from the old CA
    eng.apply(table)
    assert serial(second) != before
