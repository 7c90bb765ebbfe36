"""HTTP/2 wire format for the builtin engine: frame constants, frame builders and a stateless HPACK encoder.

Decoding uses the `hpack` library (dynamic table, Huffman, size limits). Encoding never touches
a dynamic table (static-table indexes and plain literals, like nginx), so an encoded field is a
pure function of (name, value) and is memoised: a response head costs one join of cached bytes.
"""

from __future__ import annotations

from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6, RFC 8441).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags.
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
# Settings identifiers.
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, \
    S_MAX_HEADER_LIST_SIZE = range(1, 7)
S_ENABLE_CONNECT_PROTOCOL = 8

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
DEFAULT_FRAME_SIZE = 16384
MAX_FRAME_SIZE_LIMIT = 2**24 - 1


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One serialised frame (the caller keeps `payload` within the peer's MAX_FRAME_SIZE)."""
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream_id.to_bytes(4, "big") + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


def data_header(length: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte head of a DATA frame (the payload is written after it without a copy)."""
    return length.to_bytes(3, "big") + bytes((DATA, flags)) + stream_id.to_bytes(4, "big")


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> list[bytes]:
    """HEADERS (+ CONTINUATION) frames carrying `block`."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [frame(HEADERS, flags | END_HEADERS, stream_id, block)]
    out = [frame(HEADERS, flags, stream_id, block[:max_frame])]
    for i in range(max_frame, len(block), max_frame):
        last = i + max_frame >= len(block)
        out.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, block[i:i + max_frame]))
    return out


# -- stateless HPACK encoding -------------------------------------------------------------------------
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_FULL.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK integer (RFC 7541 section 5.1) with `first`'s high bits as the representation's pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(s: bytes) -> bytes:
    return _integer(len(s), 7, 0) + s


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field as an indexed field or a literal without indexing (never added to a dynamic table)."""
    idx = _STATIC_FULL.get((name, value))
    if idx is not None:
        return _integer(idx, 7, 0x80)
    idx = _STATIC_NAME.get(name)
    if idx is not None:
        return _integer(idx, 4, 0) + _literal(value)
    return b"\x00" + _literal(name) + _literal(value)


_FIELD_CACHE: dict[tuple[bytes, bytes], bytes] = {}
_FIELD_CACHE_MAX = 8192


def encode_headers(fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block for `fields` (names already lowercase); memoised per field."""
    cache = _FIELD_CACHE
    parts = []
    for pair in fields:
        enc = cache.get(pair)
        if enc is None:
            enc = encode_field(*pair)
            if len(cache) >= _FIELD_CACHE_MAX:
                cache.clear()
            cache[pair] = enc
        parts.append(enc)
    return b"".join(parts)


#: `:status` fields, encoded once.
STATUS_FIELDS: dict[int, bytes] = {}


def status_field(status: int) -> bytes:
    enc = STATUS_FIELDS.get(status)
    if enc is None:
        enc = STATUS_FIELDS[status] = encode_field(b":status", b"%d" % status)
    return enc
