"""Real gRPC for tests: a grpcio server with raw-bytes methods (no generated code) on h2c or TLS,
and a client that reaches it through a tunnel over TLS."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

LOCAL = "127.0.0.1"

SERVICE = "gotunnel.test.Echo"
MIB = 1 << 20
#: gRPC's default message limit is 4 MiB; the suite sends 16 MiB messages.
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
FAIL_MESSAGE = "refused: ünïcode & 100% sure"


class GrpcBackend:
    """A grpcio server with raw-bytes methods (no protobuf): on h2c, or on TLS (ALPN h2) with `cert`.

    - `Unary`: answers the request reversed, with trailing metadata `x-trailer`; the request
      `fail` ends with FAILED_PRECONDITION and `FAIL_MESSAGE` instead.
    - `Big`: answers the SHA-256 of the request followed by that many bytes again (16 MiB both ways).
    - `Count`: server streaming; `N` -> N messages. The second waits until the client saw the first
      (`seen_first`), so a buffering proxy cannot pass.
    - `Chat`: bidirectional echo, message by message.
    - `Remaining`: answers the deadline the server sees (seconds left, or `none`).
    - `Block`: waits until the call ends (its deadline); `cancelled` is set when the server saw it end.
    """

    def __init__(self, cert: Any = None) -> None:
        import grpc

        self.seen_first = threading.Event()
        self.cancelled = threading.Event()
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16), options=GRPC_OPTIONS)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Big": grpc.unary_unary_rpc_method_handler(self._big),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
            "Remaining": grpc.unary_unary_rpc_method_handler(self._remaining),
            "Block": grpc.unary_unary_rpc_method_handler(self._block),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if cert is None:
            self.port = self.server.add_insecure_port(f"{LOCAL}:0")
            self.url = f"h2c://{LOCAL}:{self.port}"
        else:
            creds = grpc.ssl_server_credentials([(Path(cert.key).read_bytes(), Path(cert.cert).read_bytes())])
            self.port = self.server.add_secure_port(f"{LOCAL}:0", creds)
            self.url = f"https://{LOCAL}:{self.port}"
        self.server.start()

    def _record(self, context: Any) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata()})

    def _unary(self, request: bytes, context: Any) -> bytes:
        import grpc

        self._record(context)
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, FAIL_MESSAGE)
        context.set_trailing_metadata((("x-trailer", "t-" + request.decode(errors="replace")[:20]),))
        return request[::-1]

    def _big(self, request: bytes, context: Any) -> bytes:
        return hashlib.sha256(request).digest() + request

    def _count(self, request: bytes, context: Any) -> Iterator[bytes]:
        n = int(request)
        for i in range(n):
            if i == 1 and not self.seen_first.wait(15):
                return  # the client never got the first message: the proxy buffered it
            yield b"%d" % i

    def _chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for message in requests:
            yield b"echo:" + message

    def _remaining(self, request: bytes, context: Any) -> bytes:
        left = context.time_remaining()
        return b"none" if left is None or left > 10 ** 6 else b"%.3f" % left

    def _block(self, request: bytes, context: Any) -> bytes:
        ended = threading.Event()
        context.add_callback(ended.set)
        if ended.wait(30):
            self.cancelled.set()
        return b"late"

    def close(self) -> None:
        self.server.stop(grace=None).wait(5)


class GrpcClient:
    """A grpcio channel to a tunnel over TLS: 127.0.0.1:`port`, SNI and :authority `host`, trusting only `ca`."""

    def __init__(self, port: int, host: str, ca: str) -> None:
        import grpc

        creds = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        options = GRPC_OPTIONS + [("grpc.ssl_target_name_override", host.split(":")[0]),
                                  ("grpc.default_authority", host)]
        self.channel = grpc.secure_channel(f"{LOCAL}:{port}", creds, options=options)

    def unary(self, method: str, request: bytes, timeout: float | None = 30, **kw: Any) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=timeout, **kw)

    def unary_with_call(self, method: str, request: bytes, timeout: float = 30) -> tuple[bytes, Any]:
        return self.channel.unary_unary(f"/{SERVICE}/{method}").with_call(request, timeout=timeout)

    def stream(self, method: str, request: bytes, timeout: float = 30) -> Any:
        return self.channel.unary_stream(f"/{SERVICE}/{method}")(request, timeout=timeout)

    def chat(self, requests: Iterator[bytes], timeout: float = 30) -> Any:
        return self.channel.stream_stream(f"/{SERVICE}/Chat")(requests, timeout=timeout)

    def close(self) -> None:
        self.channel.close()
