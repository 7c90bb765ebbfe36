"""gRPC through the builtin engine: real grpcio client and server, the backend as `h2c://` (cleartext
HTTP/2) or `https://` (TLS, ALPN h2). Unary, server-streaming and bidirectional calls, status
trailers, deadlines, cancellation, 16 MiB messages, and multiplexed upstream connections."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent import futures

import pytest

from builtin_helpers import engine_factory, make_table, pki, ports  # noqa: F401  (fixtures)

grpc = pytest.importorskip("grpc")

MiB = 1 << 20
BIG = 16 * MiB
OPTIONS = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]


class EchoService:
    """Raw-bytes handlers (no generated code): what each call saw is recorded for the asserts."""

    def __init__(self) -> None:
        self.peers: set[str] = set()
        self.metadata: list[dict[str, str]] = []
        self.cancelled = threading.Event()

    def unary(self, request: bytes, context) -> bytes:
        self.peers.add(context.peer())
        md = dict(context.invocation_metadata())
        self.metadata.append(md)
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing here")
        if request == b"deadline":
            return b"%.3f" % context.time_remaining()
        if request == b"slow":
            context.add_callback(self.cancelled.set)
            for _ in range(100):
                if not context.is_active():
                    break
                time.sleep(0.05)
            return b"late"
        context.set_trailing_metadata((("x-trailer", "t1"),))
        return request

    def stream(self, request: bytes, context):
        for i in range(int(request)):
            yield b"part %d" % i

    def bidi(self, requests, context):
        for message in requests:
            yield message[::-1] if len(message) < 100 else message


def start_server(service: EchoService, pki=None) -> tuple[object, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(service.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(service.stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(service.bidi),
    })
    server.add_generic_rpc_handlers((handler,))
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        files = pki.certs["alpha"]
        creds = grpc.ssl_server_credentials([(open(files.key, "rb").read(), open(files.cert, "rb").read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


@pytest.fixture(params=["h2c", "https"])
def grpc_proxy(request, engine_factory, ports, pki):
    service = EchoService()
    server, port = start_server(service, pki if request.param == "https" else None)
    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": f"{request.param}://127.0.0.1:{port}"}], *ports, pki))
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    channel = grpc.secure_channel(f"127.0.0.1:{ports[1]}", creds, options=[
        *OPTIONS, ("grpc.ssl_target_name_override", "alpha.localhost"), ("grpc.default_authority", "alpha.localhost")])
    try:
        yield channel, service, eng
    finally:
        channel.close()
        server.stop(0)


def test_unary_with_metadata_and_trailers(grpc_proxy):
    channel, service, _ = grpc_proxy
    call = channel.unary_unary("/test.Echo/Unary")
    reply, info = call.with_call(b"ping", metadata=(("x-client", "c1"),), timeout=10)
    assert reply == b"ping"
    assert ("x-trailer", "t1") in info.trailing_metadata()
    md = service.metadata[-1]
    assert md["x-client"] == "c1" and md["x-forwarded-proto"] == "https" and md["x-forwarded-host"] == "alpha.localhost"


def test_status_and_message_arrive_in_trailers(grpc_proxy):
    channel, _, _ = grpc_proxy
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such thing here"


def test_deadline_propagates_and_cancels_the_backend_call(grpc_proxy):
    channel, service, _ = grpc_proxy
    left = float(channel.unary_unary("/test.Echo/Unary")(b"deadline", timeout=5))
    assert 0 < left <= 5  # grpc-timeout reached the backend
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/test.Echo/Unary")(b"slow", timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service.cancelled.wait(10)  # the backend saw the call end, not a stream left running


def test_server_streaming(grpc_proxy):
    channel, _, _ = grpc_proxy
    parts = list(channel.unary_stream("/test.Echo/Stream")(b"50", timeout=10))
    assert parts == [b"part %d" % i for i in range(50)]


def test_bidirectional_streaming(grpc_proxy):
    channel, _, _ = grpc_proxy
    replies = channel.stream_stream("/test.Echo/Bidi")(iter([b"abc", b"hello", b"xyz"]), timeout=10)
    assert list(replies) == [b"cba", b"olleh", b"zyx"]


@pytest.mark.slow
def test_16mib_messages_both_ways(grpc_proxy):
    channel, _, _ = grpc_proxy
    big = bytes(range(256)) * (BIG // 256)
    assert channel.unary_unary("/test.Echo/Unary")(big, timeout=60) == big
    out = list(channel.stream_stream("/test.Echo/Bidi")(iter([big, big]), timeout=60))
    assert out == [big, big]


def test_concurrent_calls_share_one_backend_connection(grpc_proxy):
    channel, service, _ = grpc_proxy
    call = channel.unary_unary("/test.Echo/Unary")
    with futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: call(b"m%d" % i, timeout=10), range(40)))
    assert replies == [b"m%d" % i for i in range(40)]
    assert len(service.peers) == 1  # multiplexed over one upstream HTTP/2 connection


def test_cli_h2c_backend_serves_grpc_and_curl_sees_http2(gotunnel):
    """Through the real CLI and daemon: `--backend h2c://...` carries gRPC; curl negotiates HTTP/2."""
    service = EchoService()
    server, port = start_server(service)
    try:
        gotunnel("start", "-d", "rpc", "--backend", f"h2c://127.0.0.1:{port}", check=True)
        ca = gotunnel("cert", "ca", "--path", check=True).out.strip()
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        with grpc.secure_channel(f"127.0.0.1:{gotunnel.https_port}", creds, options=[
                ("grpc.ssl_target_name_override", "rpc.localhost"),
                ("grpc.default_authority", "rpc.localhost")]) as channel:
            assert channel.unary_unary("/test.Echo/Unary")(b"via cli", timeout=10) == b"via cli"
        out = subprocess.run(["curl", "-s", "--http2", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_version}",
                              "--resolve", f"rpc.localhost:{gotunnel.https_port}:127.0.0.1",
                              f"https://rpc.localhost:{gotunnel.https_port}/"], capture_output=True, text=True,
                             timeout=30)
        assert out.stdout == "2"  # a gRPC server answers plain GETs too (with a gRPC error), over HTTP/2
    finally:
        server.stop(0)
