# Types for the optional compiled build of tls_transport.py (see protocol.py's docstring).

cimport cython


@cython.final
cdef class TlsConnection:
    cdef public object context, app_factory, loop, tcp, app, sslobj, incoming, outgoing, timer
    cdef public double handshake_timeout
    cdef public int state
    cdef public bint closing, paused

    cpdef _handshake(self)
    cpdef _read(self)
    cpdef _flush(self)
