"""Native recording of inspected tunnels: backend connections whose bytes the inspector sees.

For an inspected tunnel (with the engine in-process, `workers = 1`) each backend gets pools of its
own, `RecordingPool` (HTTP/1.1 clients) and `RecordingH1Pool` (HTTP/2 clients, which reach the
backend over HTTP/1.1 too). Their connections are the usual `UpstreamProtocol` / `H1Relay`, placed
behind `RecordingConnection`: every byte written to the backend goes through `RecordingTransport`
to the core's request observer, every byte read goes to the response observer first. Nothing in
upstream.py or protocol.py changes, so a tunnel that is not inspected takes exactly today's path.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from gotunnel_core.inspect.native import InspectRecorder
from gotunnel_core.inspect.observe import RequestObserver, ResponseObserver
from gotunnel_core.models import Backend, Tunnel

from .h2_upstream import H1Pool, H1Relay
from .upstream import CONNECT_TIMEOUT, Pool, UpstreamProtocol


class RecordingTransport:
    """The backend transport as the connection sees it: writes are shown to the request observer."""

    __slots__ = ("_transport", "_requests")

    def __init__(self, transport: asyncio.Transport, requests: RequestObserver) -> None:
        self._transport = transport
        self._requests = requests

    def write(self, data: bytes) -> None:
        self._requests.feed(data)
        self._transport.write(data)

    def writelines(self, parts: Iterable[bytes]) -> None:
        data = b"".join(parts)
        self._requests.feed(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:  # close, pause_reading, write_eof, get_extra_info, ...
        return getattr(self._transport, name)


class RecordingConnection(asyncio.Protocol):
    """The asyncio protocol of a recorded backend connection: shows what the backend sends to the
    response observer, then hands everything to the engine's own connection (`inner`)."""

    def __init__(self, inner: Any, observers: tuple[RequestObserver, ResponseObserver]) -> None:
        self.inner = inner
        self.requests, self.responses = observers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(RecordingTransport(transport, self.requests))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.responses.feed(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.responses.close()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def _open(pool: Pool, make: Any, recorder: InspectRecorder, tunnel: Tunnel, backend: Backend) -> Any:
    kwargs: dict[str, Any] = {}
    if pool._ssl is not None:
        kwargs = {"ssl": pool._ssl, "server_hostname": pool.host}
    _, wrapper = await asyncio.wait_for(
        pool.loop.create_connection(lambda: RecordingConnection(make(pool), recorder.open(tunnel, backend)),
                                    pool.host, pool.port, **kwargs),
        CONNECT_TIMEOUT)
    return wrapper.inner


class RecordingPool(Pool):
    """Keep-alive connections to one backend of one inspected tunnel, each one recorded."""

    __slots__ = ("recorder", "tunnel", "backend")

    def __init__(self, loop: asyncio.AbstractEventLoop, recorder: InspectRecorder, tunnel: Tunnel, backend: Backend,
                 **options: Any) -> None:
        super().__init__(loop, backend.scheme, backend.host, backend.port, **options)
        self.recorder = recorder
        self.tunnel = tunnel  # the latest version (health path for the skip rule)
        self.backend = backend

    async def connect(self) -> UpstreamProtocol:
        return await _open(self, UpstreamProtocol, self.recorder, self.tunnel, self.backend)  # type: ignore[no-any-return]


class RecordingH1Pool(H1Pool):
    """`RecordingPool` for the HTTP/2 side: `H1Relay` connections, each one recorded."""

    __slots__ = ("recorder", "tunnel", "backend")

    def __init__(self, loop: asyncio.AbstractEventLoop, recorder: InspectRecorder, tunnel: Tunnel, backend: Backend,
                 **options: Any) -> None:
        super().__init__(loop, backend.scheme, backend.host, backend.port, **options)
        self.recorder = recorder
        self.tunnel = tunnel
        self.backend = backend

    async def connect(self) -> H1Relay:  # type: ignore[override]
        return await _open(self, H1Relay, self.recorder, self.tunnel, self.backend)  # type: ignore[no-any-return]
