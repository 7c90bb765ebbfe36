"""The master CLI client: a master that drops the connection (it re-executes on a reload) is
"not answering yet", never an error that fails the daemon's request."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import uvloop

from gotunnel_haproxy.master import parse_show_proc, show_proc

SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
4100            master          3 [failed: 1]   0d00h00m05s     2.6.12
# workers
4200            worker          0               0d00h00m01s     2.6.12
# old workers
4150            worker          1               0d00h00m04s     2.6.12
"""


def test_parse_show_proc_reads_reloads_failures_and_workers() -> None:
    processes = parse_show_proc(SHOW_PROC)
    assert processes is not None
    assert (processes.reloads, processes.failed, processes.workers, processes.old_workers) == (3, 1, (4200,), (4150,))
    assert parse_show_proc("Unknown command\n") is None


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_connection_closed_before_the_command_is_not_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  loop_factory) -> None:
    """The master re-executing on a reload closes the CLI connection, at times before the command
    is written: uvloop then raises RuntimeError ("the handler is closed"), which the daemon once
    reported as an internal error. The connection here is real and really closed when returned."""
    path = str(tmp_path / "master.sock")
    real_open = asyncio.open_unix_connection

    async def open_then_lose(*args: object, **kwargs: object) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        writer.transport.abort()
        await asyncio.sleep(0)  # let the transport finish closing, as a lost connection would have
        return reader, writer

    async def scenario() -> object:
        server = await asyncio.start_unix_server(lambda r, w: None, path)
        try:
            monkeypatch.setattr(asyncio, "open_unix_connection", open_then_lose)
            return await show_proc(path, timeout=1.0)
        finally:
            server.close()

    loop = loop_factory()
    try:
        assert loop.run_until_complete(scenario()) is None
    finally:
        loop.close()


def test_a_master_that_answers_is_parsed(tmp_path: Path) -> None:
    path = str(tmp_path / "master.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    async def scenario() -> object:
        loop = asyncio.get_running_loop()
        answer = loop.run_in_executor(None, _answer_once, listener)
        processes = await show_proc(path)
        await answer
        return processes

    try:
        processes = uvloop.run(scenario())
    finally:
        listener.close()
    assert processes is not None and processes.reloads == 3


def _answer_once(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        received = b""
        while not received.endswith(b"\n"):
            chunk = conn.recv(1024)
            if not chunk:
                break
            received += chunk
        assert received == b"show proc\n"
        conn.sendall(SHOW_PROC.encode())
