"""TLS for the HTTPS listener, layered on the event loop's TCP transport.

`TlsConnection` is the listener's protocol for the raw TCP connection and the transport its HTTP
protocol (TlsClientProtocol, or H2Protocol after ALPN) writes to. It drives one `ssl.SSLObject`
over memory BIOs, as uvloop's own TLS transport does, but does only what an HTTP server needs,
which is cheaper per connection (issue 20's new-handshake-per-request scenario):

- it reads only when the incoming BIO or the SSL object holds bytes, so a connection raises
  `SSLWantReadError` about twice instead of six times (each is an exception built in C with a
  formatted message);
- closing sends close_notify and closes the TCP connection at once, as nginx does, instead of
  waiting up to 30 s for the peer's close_notify (one wake-up, read and timer less per connection);
- no second transport object, no per-connection 256 KiB buffer, no shutdown timer: ciphertext and
  plaintext are read into two buffers shared by the process (the loop calls `buffer_updated`
  right after filling them, and both are consumed before it returns).

Like protocol.py it is compiled when Cython is present (tls_transport.pxd) and runs as it is
without.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

#: Ciphertext read from the socket (the loop fills it, `buffer_updated` hands it to the BIO).
CIPHER_READ_SIZE = 256 * 1024
CIPHER_READ_BUFFER = memoryview(bytearray(CIPHER_READ_SIZE))

HANDSHAKE, OPEN, CLOSED = range(3)

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsConnection:
    """One HTTPS connection: server-side TLS between the TCP transport and an HTTP protocol.

    Implements the asyncio protocol interface towards the TCP transport and the transport
    interface towards `app` (made by `app_factory` once the handshake is done).
    """

    def __init__(self, context: ssl.SSLContext, app_factory: Callable[[], Any], loop: Any,
                 handshake_timeout: float) -> None:
        self.context = context
        self.app_factory = app_factory
        self.loop = loop
        self.handshake_timeout = handshake_timeout
        self.tcp: Any = None
        self.app: Any = None
        self.sslobj: Any = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.state = HANDSHAKE
        self.closing = False
        self.paused = False
        self.timer: Any = None

    # -- protocol side (the TCP transport calls these) ----------------------------------------
    def connection_made(self, tcp: Any) -> None:
        self.tcp = tcp
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.timer = self.loop.call_later(self.handshake_timeout, self._handshake_timed_out)

    def get_buffer(self, sizehint: int) -> memoryview:
        return CIPHER_READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.incoming.write(CIPHER_READ_BUFFER[:nbytes])
        if self.state == OPEN:
            if not self.paused and not self.closing:
                self._read()
        elif self.state == HANDSHAKE:
            self._handshake()

    def data_received(self, data: bytes) -> None:
        """For loops that do not use `get_buffer` (asyncio's own on some platforms)."""
        self.incoming.write(data)
        if self.state == OPEN:
            if not self.paused and not self.closing:
                self._read()
        elif self.state == HANDSHAKE:
            self._handshake()

    def eof_received(self) -> bool:
        """The peer closed TCP without close_notify: send what is pending and close, as
        uvloop's TLS transport does (the HTTP protocol is not told of a clean end)."""
        if self.state == HANDSHAKE:
            self.abort()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        was_open = self.state == OPEN
        self.state = CLOSED
        self.closing = True
        app = self.app
        self.app = None
        if was_open and app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # -- TLS ------------------------------------------------------------------------------------
    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except _WANT:
            self._flush()
            return
        except (ssl.SSLError, OSError, ValueError):
            self._flush()  # the alert, if OpenSSL made one
            self.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.state = OPEN
        self._flush()  # the session ticket
        app = self.app_factory()
        self.app = app
        app.connection_made(self)  # may hand over to another protocol (set_protocol)
        if self.state == OPEN and not self.paused and not self.closing:
            self._read()

    def _read(self) -> None:
        """Decrypt what has arrived into the protocol's buffer, record by record."""
        incoming, sslobj = self.incoming, self.sslobj
        while not self.paused and not self.closing:
            if not incoming.pending and not sslobj.pending():
                break
            app = self.app
            buf = app.get_buffer(-1)
            try:
                n = sslobj.read(len(buf), buf)
            except _WANT:
                break  # part of a record: wait for the rest
            except ssl.SSLZeroReturnError:  # close_notify (when ours went out first)
                n = 0
            except (ssl.SSLError, OSError, ValueError):
                self.abort()
                return
            if not n:  # the peer's close_notify: it sends no more, but may still read
                self._flush()
                if not app.eof_received():  # True: the protocol answers what is in flight, then closes
                    self.close()
                return
            app.buffer_updated(n)
        if self.outgoing.pending:  # a KeyUpdate answer, say
            self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.tcp is not None:
            self.tcp.write(data)

    def _handshake_timed_out(self) -> None:
        self.timer = None
        if self.state == HANDSHAKE:
            self.abort()

    def _resume(self) -> None:
        if self.state == OPEN and not self.paused and not self.closing:
            self._read()

    # -- transport side (the HTTP protocol calls these) ----------------------------------------
    def write(self, data: Any) -> None:
        if self.closing or not data:
            return
        try:
            self.sslobj.write(data)
        except (ssl.SSLError, OSError, ValueError):
            self.abort()
            return
        self._flush()

    def writelines(self, parts: Any) -> None:
        """One TLS record (or more, past 16 KiB) for all parts, not one per part."""
        self.write(b"".join(parts))

    def close(self) -> None:
        """close_notify, then close TCP once what was written is sent (no wait for the peer's)."""
        if self.closing:
            return
        self.closing = True
        if self.state == OPEN:
            try:
                self.sslobj.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass  # SSLWantReadError: the peer's close_notify is not waited for
            self._flush()
        if self.tcp is not None:
            self.tcp.close()

    def abort(self) -> None:
        self.closing = True
        if self.tcp is not None:
            self.tcp.abort()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            if self.tcp is not None and not self.tcp.is_closing():
                self.tcp.pause_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.tcp is not None and not self.tcp.is_closing():
                self.tcp.resume_reading()
            if self.incoming.pending or (self.sslobj is not None and self.sslobj.pending()):
                self.loop.call_soon(self._resume)  # not from inside the protocol's own call

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        self.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return int(self.tcp.get_write_buffer_size())

    def set_protocol(self, protocol: Any) -> None:
        self.app = protocol

    def get_protocol(self) -> Any:
        return self.app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self.sslobj
        if name == "ssl_object":
            return sslobj
        if sslobj is not None:
            if name == "sslcontext":
                return sslobj.context
            if name == "cipher":
                return sslobj.cipher()
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "compression":
                return sslobj.compression()
        return self.tcp.get_extra_info(name, default) if self.tcp is not None else default
