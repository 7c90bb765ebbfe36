# Types for the optional compiled build of protocol.py (see its docstring): C fields instead of
# instance dictionaries and slot descriptors, and C calls between the hot-path methods. Every
# field of the Python classes is declared here, public so other modules (and tests) read them.

cimport cython

from gotunnel_builtin_proxy.metrics cimport RouteCounters
from gotunnel_builtin_proxy.request cimport Req
from gotunnel_builtin_proxy.upstream cimport UpstreamProtocol


# Not final: TlsClientProtocol extends it (cpdef calls stay C calls: both are extension types).
cdef class ClientProtocol:
    cdef public object st, transport, parser, sni, pipeline, upstream, upgrade_buf, tracer
    cdef public bint https, activity, write_paused, resp_done, eof, lan
    cdef public bytes xfp, peer_ip
    cdef public tuple peer
    cdef public Req parsing, active
    cdef public int phase, paused
    cdef public double t_phase
    cdef public Py_ssize_t head_bytes, chunk_len, nin, nout

    cpdef close(self)
    cpdef _pause(self, int reason)
    cpdef _resume(self, int reason)
    cpdef _reject(self, status, message)
    @cython.locals(known=dict, out=list, head=list, by_host=dict, name=bytes, value=bytes, conn=bytes,
                   size=Py_ssize_t, lengths="unsigned long long")
    cpdef _dispatch(self, Req req)
    cpdef _local(self, Req req, bytes response)
    cpdef _send(self, Req req, backend)
    @cython.locals(up=UpstreamProtocol)
    cpdef _attach(self, Req req, up)
    cpdef response_done(self, up, bint keep_alive)
    @cython.locals(counters=RouteCounters)
    cpdef _count(self, Req req, double now)
    @cython.locals(now=double)
    cpdef _finish_exchange(self)


@cython.final
cdef class TlsClientProtocol(ClientProtocol):
    pass
