# Types for the optional compiled build of upstream.py (see protocol.py's docstring).

cimport cython

from gotunnel_builtin_proxy.request cimport Downstream, Req
from gotunnel_builtin_proxy.router cimport Route


cdef class Pool


@cython.final
cdef class UpstreamProtocol:
    cdef public object transport, parser, ct
    cdef public Downstream client
    cdef public Pool pool
    cdef public Req req
    cdef public list headers, out
    cdef public double t_idle
    cdef public bint idle, closed, activity, out_chunked, finished, head_sent, got_bytes, interim, broken
    cdef public bint until_close, reset_parser, upgrade_ok, upgraded, client_ka, reused, paused_by_client, via, keep

    cpdef _reset(self)
    cpdef attach(self, Downstream client, Req req)
    cpdef _complete(self)
    @cython.locals(lines=dict, known=dict, out=list, line=bytes, ka=bint, name=bytes, value=bytes, conn=bytes,
                   size=Py_ssize_t, lengths="unsigned long long", route=Route)
    cpdef _write_head(self, int status, Req req, bint interim=*, bint upgrade=*)


# Not final: h2_upstream.H1Pool extends it (and pools its own connection class).
cdef class Pool:
    cdef public object loop, _ssl
    cdef public str scheme, host
    cdef public int port, max_idle
    cdef public list idle
    cdef public double idle_timeout
    cdef public bint via, closed

    cpdef get(self)
    cpdef release(self, up)
