"""A minimal HTTP/1.1 client for Caddy's admin API on its unix socket (no TCP port is ever opened)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class AdminResponse:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()


class AdminError(OSError):
    """The admin socket could not be reached or answered garbage."""


async def request(socket_path: str, method: str, path: str, body: bytes = b"", *,
                  headers: dict[str, str] | None = None, timeout: float = 30.0) -> AdminResponse:
    """One request over a fresh connection (`Connection: close`); the whole answer is read."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), min(timeout, 5.0))
    except (OSError, asyncio.TimeoutError) as exc:
        raise AdminError(f"cannot connect to Caddy's admin socket {socket_path}: {exc}") from None
    try:
        head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise AdminError(f"Caddy's admin socket did not answer {method} {path}: {exc or 'timeout'}") from None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head_raw, sep, rest = raw.partition(b"\r\n\r\n")
    try:
        status = int(head_raw.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        raise AdminError(f"Caddy's admin socket sent a malformed answer to {method} {path}") from None
    if not sep:
        return AdminResponse(status, b"")
    if b"transfer-encoding: chunked" in head_raw.lower():
        rest = _dechunk(rest)
    return AdminResponse(status, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        line, _, data = data.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)
