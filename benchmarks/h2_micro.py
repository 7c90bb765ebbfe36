"""Per-request cost of the HTTP/2 layer, for choosing the builtin engine's implementation.

`python -m benchmarks.h2_micro {h2|lean|hpack} FILE` handles the h2load-like requests (5 request
fields, 12-byte answer with 5 fields) in memory, without sockets or routing:
  h2    - the `h2` library, server side (receive_data, send_headers, send_data, data_to_send);
  lean  - the builtin engine's own layer (H2Protocol.data_received -> respond, send_body, finish);
  hpack - the floor of any pure-Python design: hpack decode of the request + encode of the answer.
The client's frames are made beforehand (`gen N FILE`) so only the server side is measured.
Run it under `valgrind --tool=callgrind` at two values of N: the difference divided by the
difference in N is instructions per request, stable on a busy machine (README, "HTTP/2").
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from typing import Any

REQ = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"bench.localhost:8443"),
       (b"user-agent", b"h2load nghttp2/1.52.0")]
RESP = [(b"server", b"nginx"), (b"date", b"Thu, 03 Dec 2026 09:40:00 GMT"), (b"content-type", b"text/plain"),
        (b"content-length", b"12")]
BODY = b"hello world\n"


def client_bytes(n: int) -> tuple[bytes, list[bytes]]:
    """The preface and n request HEADERS frames as a real client (the h2 library) encodes them."""
    import h2.config
    import h2.connection
    import h2.settings

    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    c.initiate_connection()
    c.increment_flow_control_window(2**31 - 1 - 65535)
    preface = c.data_to_send()
    frames = []
    for _ in range(n):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, REQ, end_stream=True)
        frames.append(c.data_to_send())
        c.streams.pop(sid, None)
    return preface, frames


def load(path: str) -> tuple[bytes, list[bytes]]:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - a file this module wrote itself


def run_h2(path: str) -> None:
    import h2.config
    import h2.connection
    import h2.events

    preface, frames = load(path)
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    s.initiate_connection()
    s.receive_data(preface)
    s.data_to_send()
    for blob in frames:
        for ev in s.receive_data(blob):
            if type(ev) is h2.events.RequestReceived:
                s.send_headers(ev.stream_id, [(b":status", b"200"), *RESP])
                s.send_data(ev.stream_id, BODY, end_stream=True)
        s.data_to_send()


class _Transport:
    def __init__(self) -> None:
        self.sent = 0

    def write(self, data: bytes) -> None:
        self.sent += len(data)

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass


def run_lean(path: str) -> None:
    from gotunnel_builtin_proxy import h2_protocol
    from gotunnel_builtin_proxy.config import Settings

    class _State:
        settings = Settings()
        conns: set[Any] = set()
        log = None
        closing = False
        requests_total = 0

    def answer(self: Any, stream: Any) -> None:  # stands in for routing + the backend
        stream.respond(200, RESP, False)
        stream.send_body(BODY)
        stream.finish()

    loop = asyncio.new_event_loop()
    st = _State()
    st.loop = loop  # type: ignore[attr-defined]
    h2_protocol.H2Protocol._dispatch = answer  # type: ignore[method-assign]
    preface, frames = load(path)
    proto = h2_protocol.H2Protocol(st, h2_protocol.NO_SNI)  # type: ignore[arg-type]
    proto.connection_made(_Transport())  # type: ignore[arg-type]
    proto.data_received(preface)
    for blob in frames:
        proto.data_received(blob)
        proto._flush()
    loop.close()


def run_hpack(path: str) -> None:
    from hpack import Decoder, Encoder

    _, frames = load(path)
    blocks = [f[9:] for f in frames]
    d, e = Decoder(), Encoder()
    for b in blocks:
        d.decode(b, raw=True)
        e.encode([(b":status", b"200"), *RESP])


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        with open(sys.argv[3], "wb") as f:
            pickle.dump(client_bytes(int(sys.argv[2])), f)
    else:
        {"h2": run_h2, "lean": run_lean, "hpack": run_hpack}[sys.argv[1]](sys.argv[2])
