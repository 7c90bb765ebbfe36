"""The inspector's parts on their own: observing byte streams, the ring buffer, HAR, replay bytes, guards."""

from __future__ import annotations

import json
import os
import socket

import pytest

from gotunnel_core.dashboard import guard
from gotunnel_core.inspect.har import har
from gotunnel_core.inspect.observe import RequestObserver, ResponseObserver
from gotunnel_core.inspect.records import MASK, RecordStore
from gotunnel_core.inspect.replay import ReplayRefused, request_bytes
from gotunnel_core.models import Listen


def observers(limit: int = 1024, skip=None) -> tuple[RecordStore, RequestObserver, ResponseObserver]:
    store = RecordStore(100, limit)
    requests = RequestObserver(store, "t", "http://127.0.0.1:1", skip)
    return store, requests, ResponseObserver(store, requests)


def feed_bytewise(observer: RequestObserver | ResponseObserver, data: bytes) -> None:
    for i in range(len(data)):
        observer.feed(data[i:i + 1])


def test_pipelined_requests_pair_with_their_responses_in_order() -> None:
    store, requests, responses = observers()
    feed_bytewise(requests, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                            b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n")
    feed_bytewise(responses, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                             b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n")
    responses.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")  # HEAD: a head only
    a, b, c = (store.get(i) for i in (1, 2, 3))
    assert a and b and c
    assert (a.path, a.status, bytes(a.response_body.data), a.done) == ("/a", 200, b"hi", True)
    assert (b.method, bytes(b.request_body.data), b.status, bytes(b.response_body.data)) == ("POST", b"abc", 201, b"xyz")
    assert (c.method, c.status, c.done) == ("HEAD", 200, True)
    # the next response starts on a fresh parser after HEAD
    requests.feed(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
    responses.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    d = store.get(4)
    assert d and d.status == 404 and d.done


def test_interim_responses_and_upgrades() -> None:
    store, requests, responses = observers()
    requests.feed(b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok")
    responses.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    record = store.get(1)
    assert record and record.status == 204 and record.done
    requests.feed(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
    responses.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02yo")
    ws = store.get(2)
    assert ws and ws.status == 101 and not requests.alive and not responses.alive
    requests.feed(b"garbage after the upgrade is not parsed")
    assert len(store) == 2


def test_malformed_streams_stop_recording_and_close_finishes_records() -> None:
    store, requests, responses = observers()
    requests.feed(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    requests.feed(b"\x16\x03\x01 not http")
    assert not requests.alive and len(store) == 1
    responses.close("backend went away")
    record = store.get(1)
    assert record and record.error == "backend went away" and record.done
    # a close-delimited body ends at close
    store, requests, responses = observers()
    requests.feed(b"GET / HTTP/1.0\r\n\r\n")
    responses.feed(b"HTTP/1.0 200 OK\r\n\r\nstreamed until close")
    responses.close()
    record = store.get(1)
    assert record and record.status == 200 and record.done and record.error is None
    assert bytes(record.response_body.data) == b"streamed until close"


def test_health_checks_are_not_recorded_but_keep_pairing() -> None:
    store, requests, responses = observers(skip=lambda m, p: m == "GET" and p == "/health")
    requests.feed(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /real HTTP/1.1\r\nHost: x\r\n\r\n")
    responses.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 418 Teapot\r\nContent-Length: 0\r\n\r\n")
    assert [(r.path, r.status) for r in store.newest_first()] == [("/real", 418)]


def test_ring_buffer_body_limit_masking_and_har() -> None:
    store = RecordStore(3, 4)
    for n in range(5):
        record = store.new("t", "http://b:1")
        record.method, record.path = "POST", f"/{n}?q=v"
        record.request_headers = [("Host", "t.localhost"), ("Authorization", "secret"), ("Cookie", "c=1")]
        record.request_body.add(b"0123456789")
    assert [r.path for r in store.newest_first()] == ["/4?q=v", "/3?q=v", "/2?q=v"]
    newest = next(store.newest_first())
    body = newest.request_body.to_dict()
    assert body == {"size": 10, "kept": 4, "truncated": True, "encoding": "utf-8", "text": "0123"}
    masked = dict(newest.detail()["request"]["headers"])
    assert masked["Authorization"] == MASK and masked["Cookie"] == MASK and masked["Host"] == "t.localhost"
    assert dict(newest.detail(reveal=True)["request"]["headers"])["Authorization"] == "secret"
    log = json.loads(json.dumps(har(store.newest_first())))["log"]
    assert [e["request"]["url"] for e in log["entries"]] == [f"http://t.localhost/{n}?q=v" for n in (2, 3, 4)]
    assert log["entries"][0]["request"]["queryString"] == [{"name": "q", "value": "v"}]


def test_replay_bytes_reframe_the_body_and_refuse_cut_or_bad_edits() -> None:
    store, requests, _ = observers()
    requests.feed(b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n\r\n")
    record = store.get(1)
    assert record is not None
    data = request_bytes(record)
    assert data.startswith(b"POST /hook HTTP/1.1\r\nHost: x\r\n") and data.endswith(b"\r\n\r\nabc")
    assert b"content-length: 3\r\n" in data and b"Transfer-Encoding" not in data and b"connection: close" in data
    edited = request_bytes(record, {"method": "PUT", "body": "hello", "headers": [["X-A", "1"]]})
    assert edited.startswith(b"PUT /hook HTTP/1.1\r\nX-A: 1\r\n") and edited.endswith(b"hello")
    for bad in ({"path": "/a b"}, {"method": "GE T"}, {"headers": [["X", "a\r\nInjected: 1"]]}, {"headers": [["Bad Name", "v"]]}):
        with pytest.raises(ReplayRefused):
            request_bytes(record, bad)
    record.request_body = type(record.request_body)(1, bytearray(b"a"), 3)  # cut
    with pytest.raises(ReplayRefused, match="inspect_body_limit"):
        request_bytes(record)


def test_host_and_origin_guards() -> None:
    assert guard.host_allowed("gotunnel.localhost:7373", 7373) and guard.host_allowed("127.0.0.1:7373", 7373)
    assert guard.host_allowed("[::1]:7373", 7373) and guard.host_allowed("GOTUNNEL.LOCALHOST:7373", 7373)
    for host in (None, "gotunnel.localhost", "evil.com:7373", "gotunnel.localhost:7374", "gotunnel.localhost.evil.com:7373"):
        assert not guard.host_allowed(host, 7373), host
    assert guard.origin_allowed(None, 1) and guard.origin_allowed("http://gotunnel.localhost:1", 1)
    assert not guard.origin_allowed("null", 1) and not guard.origin_allowed("http://gotunnel.localhost:2", 1)
    listen = Listen("0.0.0.0", 8080, 8443)  # through the engine: our name on the engine's ports
    for host in ("gotunnel.localhost", "gotunnel.localhost:8080", "GOTUNNEL.localhost:8443", "gotunnel.localhost."):
        assert guard.engine_host_allowed(host, listen), host
    for host in (None, "gotunnel.localhost:7373", "localhost:8443", "evil.example:8443", "gotunnel.local:8443",
                 "gotunnel.localhost:8444", "x.gotunnel.localhost:8443"):
        assert not guard.engine_host_allowed(host, listen), host
    for origin in (None, "https://gotunnel.localhost:8443", "http://gotunnel.localhost:8080"):
        assert guard.engine_origin_allowed(origin, listen), origin
    for origin in ("null", "https://gotunnel.localhost", "http://gotunnel.localhost:7373", "https://evil.example"):
        assert not guard.engine_origin_allowed(origin, listen), origin
    assert guard.engine_origin_allowed("https://gotunnel.localhost", Listen("0.0.0.0", 80, 443))
    # the engine appends the real peer last: a LAN peer's forged "127.0.0.1" comes first
    for forwarded in (None, "127.0.0.1", "10.0.0.1, 127.0.0.1", "::1", "[::1]", "::ffff:127.0.0.1"):
        assert guard.forwarded_from_this_machine(forwarded), forwarded
    for forwarded in ("10.0.0.1", "127.0.0.1, 192.168.1.20", "unknown", "", "127.0.0.1,"):
        assert not guard.forwarded_from_this_machine(forwarded), forwarded
    assert guard.is_loopback("127.0.0.5") and guard.is_loopback("::1") and guard.is_loopback("::ffff:127.0.0.1")
    assert not guard.is_loopback("10.0.0.1") and not guard.is_loopback("::ffff:10.0.0.1")


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="peer uid lookup reads Linux's /proc/net/tcp")
def test_peer_uid_is_read_from_proc() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        accepted, peer = server.accept()
        with accepted:
            assert guard.peer_uid(peer, accepted.getsockname()) == os.getuid()
            assert guard.same_user(peer, accepted.getsockname())
            assert guard.peer_uid(("127.0.0.1", 1), accepted.getsockname()) is None
        assert client


def test_the_dashboard_route_is_an_ordinary_loopback_only_tunnel() -> None:
    from gotunnel_core.dashboard.route import dashboard_tunnel, engine_url, refuse_reserved
    from gotunnel_core.errors import UsageError

    tunnel = dashboard_tunnel(41234)
    assert tunnel.name == "gotunnel" and not tunnel.lan and tunnel.https and not tunnel.inspect
    assert [b.url for b in tunnel.backends] == ["http://127.0.0.1:41234"]
    assert engine_url(Listen("0.0.0.0", 80, 443)) == "https://gotunnel.localhost/"
    assert engine_url(Listen("0.0.0.0", 8080, 8443)) == "https://gotunnel.localhost:8443/"
    with pytest.raises(UsageError, match="reserved"):
        refuse_reserved("gotunnel")
    assert refuse_reserved("gotunnel-app") == "gotunnel-app"


def test_only_engines_able_to_keep_lan_peers_out_get_the_route() -> None:
    from gotunnel_core.dashboard.route import engine_routes_dashboard
    from gotunnel_core.engine import Capability

    assert engine_routes_dashboard(Capability()) and engine_routes_dashboard(Capability.variant("differently"))
    assert not engine_routes_dashboard(Capability.pending("LAN peers reach .localhost names"))
    assert not engine_routes_dashboard(Capability.unsupported("no loopback-only routes"))
