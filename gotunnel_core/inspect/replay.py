"""Send a recorded request to its backend again; the exchange becomes a new record."""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from ..errors import GotunnelError, UsageError
from ..models import Backend, parse_header_name, parse_header_value
from .observe import RequestObserver, ResponseObserver
from .records import Record, RecordStore
from .relay import CHUNK, open_backend

#: Framing headers the replay sets itself (the body is sent whole, with its length).
_FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}
REPLAY_TIMEOUT = 60.0


class ReplayRefused(UsageError):
    """The record cannot be sent again faithfully (its body was cut, or an edit is malformed)."""


def request_bytes(record: Record, edits: Mapping[str, Any] | None = None) -> bytes:
    """The recorded request as HTTP/1.1 bytes, with optional edits {method, path, headers, body}."""
    edits = edits or {}
    if record.request_body.truncated and "body" not in edits:
        raise ReplayRefused(f"request {record.id}'s body was cut at {record.request_body.limit} bytes "
                            "(inspect_body_limit); it cannot be replayed as it was",
                            hint="replay it with an edited body, or raise inspect_body_limit")
    method = str(edits.get("method", record.method))
    path = str(edits.get("path", record.path))
    if not method.isascii() or not method.isalpha() or not path.startswith("/") or not path.isascii() \
            or any(c <= " " or c == "\x7f" for c in path):
        raise ReplayRefused(f"cannot replay as {method!r} {path!r}: not a method and an origin-form path")
    pairs = record.request_headers  # as the parser read them: no CR, LF or NUL can be in them
    if "headers" in edits:
        try:
            pairs = [(parse_header_name(k), parse_header_value(v)) for k, v in edits["headers"]]
        except (TypeError, ValueError, GotunnelError) as exc:
            raise ReplayRefused(f"cannot replay with these headers: {exc}") from None
    if "body" in edits and not isinstance(edits["body"], str):
        raise ReplayRefused("cannot replay: an edited body must be a string")
    body = edits["body"].encode() if "body" in edits else bytes(record.request_body.data)
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in pairs if k.lower() not in _FRAMING]
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"content-length: {len(body)}")
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def replay(store: RecordStore, record: Record, backend: Backend, edits: Mapping[str, Any] | None = None) -> Record:
    """Send `record`'s request (edited) to `backend`; return the new record once the answer is in."""
    data = request_bytes(record, edits)
    requests = RequestObserver(store, record.tunnel, backend.url, replay_of=record.id)
    responses = ResponseObserver(store, requests)
    requests.feed(data)
    new = requests.last
    assert new is not None  # `request_bytes` built a request the parser reads
    try:
        reader, writer = await open_backend(backend)
    except (OSError, asyncio.TimeoutError) as exc:
        responses.close(f"backend {backend.url} unreachable: {exc or type(exc).__name__}")
        return new
    try:
        writer.write(data)
        await writer.drain()

        async def read_all() -> None:
            while chunk := await reader.read(CHUNK):
                responses.feed(chunk)
                if new.done:
                    return

        await asyncio.wait_for(read_all(), REPLAY_TIMEOUT)
    except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
        responses.close(f"replay failed: {exc or type(exc).__name__}")
    finally:
        writer.close()
        responses.close()
    return new
