"""Conformance rows for HTTP/2, gRPC and a real browser (issue 12).

Clients are real: the `h2` library on a TLS socket that negotiates ALPN (`..h2client`), `curl
--http2`, grpcio (`..grpc_backend`), and headless Chromium driven over the DevTools protocol with an
NSS database trusting only gotunnel's CA (`..browser`). A row that depends on whether the engine
bridges websockets inside HTTP/2 reads the engine's own declaration of `h2_websocket`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..backends import AlpnWsEchoServer, BarrierServer, WsEchoServer, header_values, pattern, pattern_sha256
from ..engines import make_pki
from ..grpc_backend import FAIL_MESSAGE, MIB, GrpcBackend, GrpcClient
from ..h2client import H2Client, WsFrameReader, curl_http_version, ws_frame
from ..runner import wait_for
from . import Env, app, behaviour, env  # noqa: F401 - fixtures

#: HTTP/2 SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
ENABLE_CONNECT_PROTOCOL = 0x8
MIB100 = 100 * MIB


def bridges_h2_websockets(env: Env) -> bool:
    """Whether the engine declares that it carries websockets inside HTTP/2 (RFC 8441)."""
    return env.capability("h2_websocket").kind != "unsupported"


def h2_client(env: Env, name: str, *, require_h2: bool = True, timeout: float = 15) -> H2Client:
    """A TLS connection to tunnel `name` offering h2 and http/1.1 by ALPN, as browsers do (:authority
    with the port, as browsers send it); with `require_h2`, the engine must have picked h2."""
    client = H2Client(env.g.https_port, f"{name}.localhost", env.ca, alpn=("h2", "http/1.1"), timeout=timeout)
    client.authority = env.url_host(name, True)
    if require_h2:
        assert client.alpn == "h2", f"{env.engine} negotiated {client.alpn!r}, not h2"
    return client


def pump_until(client: H2Client, done: Any, timeout: float = 15, what: str = "the server") -> None:
    wait_for(lambda: done() or (client.pump(0.2) is not None and done()), timeout, what=what)


def server_settings(client: H2Client) -> dict[int, int]:
    pump_until(client, lambda: client.settings_received, 10, "the server's SETTINGS")
    return client.remote_settings


def open_websocket(client: H2Client, path: str) -> tuple[int, WsFrameReader]:
    """An RFC 8441 websocket (extended CONNECT) on `client`; the reader collects the server's frames."""
    sid = client.start("CONNECT", path, [(":protocol", "websocket"), ("sec-websocket-version", "13")], end=False)
    response = client.responses[sid]
    pump_until(client, lambda: response.status or response.ended, 15, "the websocket's response")
    assert response.status == 200, (response.headers, bytes(response.body))
    reader = WsFrameReader()
    reader.feed(bytes(response.body))
    response.on_data = reader.feed
    return sid, reader


# ----- HTTP/2 by ALPN -----------------------------------------------------------------------------------

@behaviour("h2_alpn",
           'HTTP/2 by ALPN over HTTPS (`curl --http2` reports HTTP/2), requests and responses')
def test_http2_negotiated_by_alpn_for_requests_and_responses(env: Env, app: Any) -> None:
    backend = app("h2")
    env.start("-d", "h2", "-p", str(backend.port))
    version, status = curl_http_version(env.g.https_port, env.url_host("h2", True), env.ca, "/curl", "--http2")
    assert (version, status) == ("2", "200")
    client = h2_client(env, "h2")
    try:
        got = client.request("GET", "/p?q=1", [("x-custom", "one"), ("user-agent", "h2-test")])
        assert got.status == 200 and got.header("x-backend") == "h2"
        echo = json.loads(got.body)
        host = env.url_host("h2", True)
        assert echo["path"] == "/p?q=1" and echo["method"] == "GET"
        assert header_values(echo, "Host") == [host]  # :authority becomes Host
        assert header_values(echo, "X-Forwarded-Proto") == ["https"]
        assert header_values(echo, "X-Forwarded-Host") == [host]
        assert header_values(echo, "X-Custom") == ["one"]
        body = b"posted over h2 " * 1000
        posted = client.request("POST", "/post", [("content-type", "text/plain"), ("content-length", str(len(body)))],
                                body)
        assert posted.status == 200 and json.loads(posted.body)["body"] == body.decode()
    finally:
        client.close()


@behaviour("h2_off", '`--no-http2`: only http/1.1 offered')
def test_no_http2_offers_only_http11(env: Env, app: Any) -> None:
    backend = app("h1")
    env.g("--no-http2", "start", "-d", "h1", "-p", str(backend.port), check=True)  # the flag reaches the daemon
    client = h2_client(env, "h1", require_h2=False)
    assert client.alpn in ("http/1.1", None)
    client.close()
    version, status = curl_http_version(env.g.https_port, env.url_host("h1", True), env.ca, "/", "--http2")
    assert (version, status) == ("1.1", "200")
    assert env.get("h1", https=True)[0] == 200


# ----- streaming and multiplexing --------------------------------------------------------------------------

@pytest.mark.slow
@behaviour("h2_upload_streaming", 'HTTP/2: 100 MiB upload, streamed')
def test_http2_upload_100mib_streamed(env: Env, app: Any) -> None:
    backend = app("up")
    env.start("-d", "up", "-p", str(backend.port))
    client = h2_client(env, "up", timeout=120)
    try:
        sid = client.start("POST", "/upload", [("content-type", "application/octet-stream")], end=False)
        for part in pattern(MIB100):
            client.send_body(sid, part)
        last_sent = time.time()
        client.send_body(sid, b"", end=True)
        got = client.wait(sid, timeout=120)
    finally:
        client.close()
    result = json.loads(got.body)
    assert got.status == 200 and result["bytes"] == MIB100 and result["sha256"] == pattern_sha256(MIB100)
    assert result["first_byte_at"] < last_sent - 0.01  # the backend had the first bytes long before the last were sent


@pytest.mark.slow
@behaviour("h2_download_streaming", 'HTTP/2: 100 MiB download, streamed')
def test_http2_download_100mib_streamed(env: Env, app: Any) -> None:
    backend = app("down")
    env.start("-d", "down", "-p", str(backend.port))
    digest, total = hashlib.sha256(), [0]

    def take(data: bytes) -> None:
        digest.update(data)
        total[0] += len(data)

    client = h2_client(env, "down", timeout=120)
    try:
        sid = client.start("GET", f"/download/{MIB100}")
        client.responses[sid].on_data = take  # hashed as it arrives (nothing else is read before this)
        got = client.wait(sid, timeout=120)
    finally:
        client.close()
    assert got.status == 200 and total[0] == MIB100 and digest.hexdigest() == pattern_sha256(MIB100)


@behaviour("h2_concurrent_streams", 'HTTP/2: 100 concurrent streams on one connection')
def test_100_concurrent_streams_on_one_connection(env: Env) -> None:
    backend = BarrierServer(100)  # answers only while all 100 requests wait at the backend together
    try:
        env.start("-d", "many", "--backend", backend.url)
        client = h2_client(env, "many")
        try:
            assert server_settings(client).get(0x3, 1 << 31) >= 100  # SETTINGS_MAX_CONCURRENT_STREAMS
            streams = [client.start("GET", f"/barrier/{i}") for i in range(100)]
            results = [client.wait(sid, timeout=60) for sid in streams]
        finally:
            client.close()
    finally:
        backend.close()
    assert [r.status for r in results] == [200] * 100
    assert sorted(int(r.body) for r in results) == list(range(100))  # each request was one of the 100 at the barrier


# ----- websockets inside HTTP/2 (RFC 8441) -----------------------------------------------------------------

@behaviour("h2_connect_setting",
           'Extended CONNECT (RFC 8441) advertised only where websockets over HTTP/2 are bridged')
def test_extended_connect_advertised_only_where_bridged(env: Env, app: Any) -> None:
    env.start("-d", "set", "-p", str(app().port))
    client = h2_client(env, "set")
    try:
        advertised = server_settings(client).get(ENABLE_CONNECT_PROTOCOL, 0) == 1
    finally:
        client.close()
    assert advertised == bridges_h2_websockets(env), (
        f"{env.engine} {'advertises' if advertised else 'does not advertise'} SETTINGS_ENABLE_CONNECT_PROTOCOL")


@behaviour("h2_websocket", 'WebSocket inside HTTP/2 (RFC 8441), bridged to an HTTP/1.1 Upgrade')
def test_websockets_inside_http2_bridged_to_http11_upgrades(env: Env, app: Any) -> None:
    server = WsEchoServer()
    try:
        env.start("-d", "ws", "--backend", server.url)
        client = h2_client(env, "ws")
        try:
            assert server_settings(client).get(ENABLE_CONNECT_PROTOCOL) == 1
            sockets = [open_websocket(client, "/chat") for _ in range(3)]  # three at once on one connection
            for i, (sid, _) in enumerate(sockets):
                client.send_body(sid, ws_frame(f"hello {i}"))
            readers = [reader for _, reader in sockets]
            pump_until(client, lambda: all(r.texts for r in readers), 15, "an echo on every websocket")
            assert [r.texts for r in readers] == [["hello 0"], ["hello 1"], ["hello 2"]]
            sid, reader = sockets[0]
            client.send_body(sid, ws_frame("again"))
            pump_until(client, lambda: len(reader.texts) == 2, 15, "the second echo")
            assert reader.texts[1] == "again"
        finally:
            client.close()
    finally:
        server.close()


@behaviour("https_backend_websocket", 'WebSocket to an https:// backend that prefers h2 (ALPN): HTTP/1.1 upstream')
def test_websocket_to_an_https_backend_that_prefers_h2_goes_over_http11(env: Env, tmp_path: Path) -> None:
    from websockets.sync.client import connect as ws_connect

    server = AlpnWsEchoServer(make_pki(tmp_path / "backend-pki", ["backend"]).certs["backend"])
    try:
        env.start("-d", "tlsws", "--backend", server.url)
        raw = socket.create_connection(("127.0.0.1", env.g.https_port), timeout=10)
        url = f"wss://{env.url_host('tlsws', True)}/chat"
        with ws_connect(url, sock=raw, ssl=ssl.create_default_context(cafile=env.ca), open_timeout=10) as ws:
            ws.send("over http/1.1")
            assert ws.recv(timeout=10) == "over http/1.1"
        client = h2_client(env, "tlsws", require_h2=False)
        try:  # and from inside an HTTP/2 connection, where the engine offers that
            if client.alpn == "h2" and server_settings(client).get(ENABLE_CONNECT_PROTOCOL) == 1:
                sid, reader = open_websocket(client, "/chat")
                client.send_body(sid, ws_frame("over h2"))
                pump_until(client, lambda: reader.texts, 15, "the echo")
                assert reader.texts == ["over h2"]
        finally:
            client.close()
    finally:
        server.close()
    assert server.alpn and set(server.alpn) <= {"http/1.1", None}, server.alpn  # never h2 for a websocket


# ----- gRPC ----------------------------------------------------------------------------------------------

@pytest.fixture(params=["h2c", "https"])
def grpc_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GrpcBackend]:
    """A grpcio server reached as h2c://127.0.0.1:PORT or https://127.0.0.1:PORT (TLS, ALPN h2)."""
    cert = None
    if request.param == "https":
            cert = make_pki(tmp_path / "backend-pki", ["backend"]).certs["backend"]
    backend = GrpcBackend(cert)
    yield backend
    backend.close()


@pytest.fixture
def grpc_client(grpc_backend: GrpcBackend, env: Env) -> Iterator[GrpcClient]:
    # The backend listens before `env` picks the tunnel ports, so the kernel cannot hand it one of them.
    env.start("-d", "grpc", "--backend", grpc_backend.url)
    client = GrpcClient(env.g.https_port, env.url_host("grpc", True), env.ca)
    yield client
    client.close()


@behaviour("grpc_unary",
           'gRPC unary to h2c:// and https:// backends, trailers (grpc-status, grpc-message)')
def test_grpc_unary_with_trailers(grpc_client: GrpcClient, grpc_backend: GrpcBackend) -> None:
    import grpc

    response, call = grpc_client.unary_with_call("Unary", b"hello")
    assert response == b"olleh"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-trailer", "t-hello") in list(call.trailing_metadata())
    with pytest.raises(grpc.RpcError) as failed:
        grpc_client.unary("Unary", b"fail")
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # grpc-status in the trailers
    assert failed.value.details() == FAIL_MESSAGE  # grpc-message, percent-encoded on the wire
    assert grpc_backend.metadata[0].get("x-forwarded-proto") == "https"


@behaviour("grpc_server_streaming", 'gRPC server streaming, unbuffered')
def test_grpc_server_streaming_is_not_buffered(grpc_client: GrpcClient, grpc_backend: GrpcBackend) -> None:
    import grpc

    responses = grpc_client.stream("Count", b"5")
    first = next(responses)  # the backend sends the rest only once this one arrived here
    assert first == b"0"
    grpc_backend.seen_first.set()
    assert list(responses) == [b"1", b"2", b"3", b"4"]
    assert responses.code() == grpc.StatusCode.OK


@behaviour("grpc_bidi", 'gRPC bidirectional streaming, message by message')
def test_grpc_bidirectional_streaming_message_by_message(grpc_client: GrpcClient) -> None:
    import grpc

    outgoing: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (message := outgoing.get(timeout=20)) is not None:
            yield message

    responses = grpc_client.chat(requests())
    for i in range(5):  # each message goes out only after the previous echo came back
        outgoing.put(b"m%d" % i)
        assert next(responses) == b"echo:m%d" % i
    outgoing.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


@behaviour("grpc_deadline", 'gRPC deadlines reach the backend and expire')
def test_grpc_deadlines_reach_the_backend_and_expire(grpc_client: GrpcClient, grpc_backend: GrpcBackend) -> None:
    import grpc

    left = float(grpc_client.unary("Remaining", b"", timeout=20))
    assert 0 < left <= 20  # the backend knows the client's deadline: grpc-timeout came through
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        grpc_client.unary("Block", b"", timeout=1.0)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    wait_for(grpc_backend.cancelled.is_set, timeout=10, what="the backend to see the call end")


@pytest.mark.slow
@behaviour("grpc_large_messages", 'gRPC 16 MiB messages both ways')
def test_grpc_16mib_messages_both_ways(grpc_client: GrpcClient) -> None:
    message = bytes(range(256)) * (16 * MIB // 256)
    response = grpc_client.unary("Big", message, timeout=60)
    assert response[:32] == hashlib.sha256(message).digest() and response[32:] == message


# ----- a real browser --------------------------------------------------------------------------------------

@pytest.mark.slow
@behaviour("browser", 'Chromium over HTTPS: page over HTTP/2, its websocket echoes')
def test_chromium_loads_a_page_and_its_websocket_echoes(env: Env, tmp_path: Path) -> None:
    from ..browser import CERTUTIL, CHROMIUM, Chromium, PageAndWebsocketServer, nss_trusting_only

    if CHROMIUM is None or CERTUTIL is None:
        pytest.skip("needs chromium and certutil (apt-get install chromium libnss3-tools)")
    server = PageAndWebsocketServer()
    browser = None
    try:
        env.start("-d", "page", "--backend", server.url)
        nss_trusting_only(tmp_path / "home", env.ca)  # the only CA this browser trusts besides its built-in roots
        browser = Chromium(tmp_path / "home", tmp_path / "profile")
        session = browser.open(f"https://{env.url_host('page', True)}/")
        result = browser.evaluate(session, "window.gotunnelResult")
        dom = browser.evaluate(session, "document.getElementById('result').textContent")
        handshakes = [e["params"]["response"]["status"] for e in browser.events
                      if e["method"] == "Network.webSocketHandshakeResponseReceived"]
    finally:
        err = browser.close() if browser is not None else ""
        server.close()
    assert json.loads(dom) == result, dom
    assert result.get("echo") == "ping from chromium", (result, err[-2000:])
    assert result["protocol"] == "h2", result  # every engine offers h2 by default
    # The websocket rode inside the HTTP/2 connection (200, RFC 8441) where the engine advertises
    # it, else its own HTTP/1.1 connection (101).
    assert handshakes == [200 if bridges_h2_websockets(env) else 101], handshakes
    assert server.pages == 1 and len(server.handshakes) == 1
