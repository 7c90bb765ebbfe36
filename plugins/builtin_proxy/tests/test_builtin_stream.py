"""Streaming through the builtin engine: large bodies with bounded memory, SSE, websockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from builtin_helpers import (  # noqa: F401  (fixtures)
    LOCAL, EchoServer, backend_a, engine_factory, make_table, pki, ports, wait_for,
)

#: 256 MiB in the test suite; `make bench` streams 1 GiB each way (GOTUNNEL_STREAM_MIB=1024).
SIZE = int(os.environ.get("GOTUNNEL_STREAM_MIB", "256")) * 1024 * 1024
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


@pytest.fixture
def engine_proc(tmp_path, backend_a, ports):
    """The engine in a subprocess (stopped by pid in teardown) so its RSS can be watched."""
    table = make_table([{"name": "alpha", "backends": backend_a.url}], *ports)
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"table": table.to_dict(), "settings": {}}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("builtin_engine_proc.py")), str(config)],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc, ports[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RssWatcher:
    """Samples a process's RSS every 50 ms on a thread; `peak` is the maximum seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.base


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the response head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.slow
def test_streamed_download_with_bounded_proxy_memory(engine_proc):
    proc, port = engine_proc
    watcher = RssWatcher(proc.pid)
    try:
        with socket.create_connection((LOCAL, port), timeout=30) as s:
            s.sendall(b"GET /download/%d HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n" % SIZE)
            head, rest = _read_head(s)
            assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % SIZE in head
            got = len(rest)
            buf = bytearray(1 << 20)
            stalled = False
            while got < SIZE:
                if not stalled and got > 16 * 2**20:
                    # A slow consumer: without backpressure the proxy would buffer what the backend sends meanwhile.
                    stalled = True
                    time.sleep(1.0)
                n = s.recv_into(buf)
                assert n, f"closed after {got} bytes"
                got += n
            assert got == SIZE
    finally:
        growth = watcher.stop()
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / 2**20:.1f} MiB"


@pytest.mark.slow
def test_streamed_upload_with_bounded_proxy_memory(engine_proc):
    proc, port = engine_proc
    watcher = RssWatcher(proc.pid)
    try:
        with socket.create_connection((LOCAL, port), timeout=30) as s:
            s.sendall(b"POST /upload?stall=1 HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: %d\r\n\r\n" % SIZE)
            block = b"u" * (1 << 20)
            for _ in range(SIZE // len(block)):
                s.sendall(block)
            head, rest = _read_head(s)
            while not rest.endswith(b"}"):
                rest += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert json.loads(rest) == {"received": SIZE}
    finally:
        growth = watcher.stop()
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / 2**20:.1f} MiB"


def test_sse_first_event_arrives_before_the_stream_ends(engine_factory, backend_a, ports):
    eng = engine_factory()
    eng.start(make_table([{"name": "alpha", "backends": backend_a.url}], *ports))
    with socket.create_connection((LOCAL, ports[0]), timeout=10) as s:
        s.sendall(b"GET /sse HTTP/1.1\r\nHost: alpha.localhost\r\nAccept: text/event-stream\r\n\r\n")
        head, rest = _read_head(s)
        assert head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head
        while b"data: first" not in rest:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
        assert not backend_a.sse_release.is_set()  # the backend still holds the stream open
        backend_a.sse_release.set()
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
        assert b"data: last" in rest


class WsBackend:
    """A `websockets` echo server on its own loop thread."""

    def __init__(self) -> None:
        from websockets.asyncio.server import serve

        self.loop = asyncio.new_event_loop()

        async def echo(ws) -> None:
            async for message in ws:
                await ws.send(message)

        async def start():
            return await serve(echo, LOCAL, 0)

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    def close(self) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def ws_backend():
    server = WsBackend()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_websocket_echo_through_the_proxy(engine_factory, ws_backend, ports, pki, scheme):
    from websockets.sync.client import connect

    eng = engine_factory()
    eng.start(make_table([{"name": "ws", "backends": f"http://{LOCAL}:{ws_backend.port}"}], *ports, pki))
    port = ports[0] if scheme == "ws" else ports[1]
    sock = socket.create_connection((LOCAL, port), timeout=10)
    kwargs = {"ssl": pki.client_context(), "server_hostname": "ws.localhost"} if scheme == "wss" else {}
    with connect(f"{scheme}://ws.localhost/chat", sock=sock, open_timeout=10, **kwargs) as ws:
        for message in ["hello", "x" * 200_000, b"\x00\x01binary"]:
            ws.send(message)
            assert ws.recv(timeout=10) == message
        # the routing table changes while the websocket is open: it stays up
        eng.apply(make_table([], *ports, pki))
        ws.send("still there")
        assert ws.recv(timeout=10) == "still there"


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_vite_style_hmr_websocket(engine_factory, ports, pki, scheme):
    """Vite's HMR client negotiates the `vite-hmr` subprotocol and the server pushes unprompted."""
    import json as _json

    from websockets.asyncio.server import serve
    from websockets.sync.client import connect

    loop = asyncio.new_event_loop()
    push = asyncio.Event()

    async def hmr(ws) -> None:
        await ws.send(_json.dumps({"type": "connected"}))
        await push.wait()
        await ws.send(_json.dumps({"type": "update", "updates": [{"path": "/src/App.tsx"}]}))
        await ws.wait_closed()

    async def start():
        return await serve(hmr, LOCAL, 0, subprotocols=["vite-hmr"])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        backend_port = next(iter(server.sockets)).getsockname()[1]
        eng = engine_factory()
        eng.start(make_table([{"name": "ws", "backends": f"http://{LOCAL}:{backend_port}"}], *ports, pki))
        port = ports[0] if scheme == "ws" else ports[1]
        sock = socket.create_connection((LOCAL, port), timeout=10)
        kwargs = {"ssl": pki.client_context(), "server_hostname": "ws.localhost"} if scheme == "wss" else {}
        with connect(f"{scheme}://ws.localhost/?token=abc", sock=sock, subprotocols=["vite-hmr"],
                     open_timeout=10, **kwargs) as ws:
            assert ws.subprotocol == "vite-hmr"
            assert _json.loads(ws.recv(timeout=10)) == {"type": "connected"}
            loop.call_soon_threadsafe(push.set)
            assert _json.loads(ws.recv(timeout=10))["type"] == "update"
    finally:
        async def stop():
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
