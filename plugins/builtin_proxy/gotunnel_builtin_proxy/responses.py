"""Precomputed bytes for status lines, hop-by-hop header names and the proxy's own answers."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

#: b"HTTP/1.1 200 OK\r\n" for every known status, so responses never format a status line.
STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    """The precomputed status line, or a phrase-less one for unknown codes."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


#: Request headers never forwarded as-is (hop-by-hop, or rebuilt by the proxy).
#: Values: 0 = drop, 1 = Host, 2 = Connection, 3 = Transfer-Encoding, 4 = X-Forwarded-For,
#: 5 = Upgrade, 6 = Content-Length, 7 = Gotunnel-Hop (the loop marker, gotunnel_core.loops).
REQ_SPECIAL: dict[bytes, int] = {
    b"gotunnel-hop": 7,
    b"host": 1,
    b"connection": 2,
    b"keep-alive": 0,
    b"proxy-connection": 0,
    b"te": 0,
    b"trailer": 0,
    b"transfer-encoding": 3,
    b"upgrade": 5,
    b"x-forwarded-for": 4,
    b"x-forwarded-proto": 0,
    b"x-forwarded-host": 0,
    b"content-length": 6,
}

#: Response headers dropped (hop-by-hop; framing is redone by the proxy).
#: Values: 0 = drop, 2 = Connection, 3 = Transfer-Encoding, 5 = Upgrade, 6 = Content-Length.
RESP_SPECIAL: dict[bytes, int] = {
    b"connection": 2,
    b"keep-alive": 0,
    b"proxy-connection": 0,
    b"te": 0,
    b"trailer": 0,
    b"transfer-encoding": 3,
    b"upgrade": 5,
    b"content-length": 6,
}


class KindCache:
    """Header name as sent (any case) -> kind from `table`, or None for ordinary headers.

    `known` is a plain dict memo, so the hot loop does one dict probe (`known.get(name, -1)`, a C
    call in the compiled build) instead of `lower()` plus a probe; `miss(name)` fills it. Bounded:
    past the limit it still answers but stops remembering new spellings. `lengths` has bit n set
    when some name in `table` is n bytes long: a name whose bit is clear is ordinary without a
    probe (hashing a fresh header name is most of a probe's cost).
    """

    __slots__ = ("known", "table", "lengths")
    LIMIT = 2048

    def __init__(self, table: dict[bytes, int]) -> None:
        self.known: dict[bytes, int | None] = {}
        self.table = table
        self.lengths = 0
        for name in table:
            assert len(name) < 64, "the length mask holds names shorter than 64 bytes"
            self.lengths |= 1 << len(name)

    def ordinary_by_length(self, name: bytes) -> bool:
        """Whether `name` cannot be special because of its length alone (the hot loops inline this)."""
        return len(name) >= 64 or not (self.lengths >> len(name)) & 1

    def miss(self, name: bytes) -> int | None:
        kind = self.table.get(name.lower())
        if len(self.known) < self.LIMIT:
            self.known[name] = kind
        return kind


REQ_KINDS = KindCache(REQ_SPECIAL)
RESP_KINDS = KindCache(RESP_SPECIAL)

#: Connection tokens that name no header (so need no second filtering pass).
PLAIN_CONNECTION_TOKENS = frozenset((b"keep-alive", b"close", b"upgrade", b""))

VIA = b"Via: 1.1 gotunnel\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
CONN_CLOSE = b"Connection: close\r\n"
CONN_KEEP_ALIVE = b"Connection: keep-alive\r\n"
CHUNK_END = b"0\r\n\r\n"
CRLF = b"\r\n"


_date_cache: list = [0, b""]


def date_header() -> bytes:
    """`Date: ...` for answers the proxy makes itself, formatted at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _date_cache[1]


def simple_response(
    status: int,
    body: bytes = b"",
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
    head_only: bool = False,
    http10_keep_alive: bool = False,
) -> bytes:
    """A complete response the proxy answers itself (pages, redirects, errors, hook answers)."""
    parts = [status_line(status), date_header()]
    if headers:
        for name, value in headers:
            parts += (name, b": ", value, CRLF)
    if body or status not in (204, 304):
        if content_type:
            parts += (b"Content-Type: ", content_type, CRLF)
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(CONN_CLOSE)
    elif http10_keep_alive:
        parts.append(CONN_KEEP_ALIVE)
    parts.append(CRLF)
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def error_response(status: int, message: str) -> bytes:
    """Plain-text error that closes the connection (400, 408, 431, 503 ...)."""
    return simple_response(status, (message + "\n").encode("utf-8", "replace"), close=True)
