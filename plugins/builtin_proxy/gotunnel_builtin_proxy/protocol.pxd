# Types for the optional compiled build of protocol.py (see its docstring): C fields instead of
# instance dictionaries and slot descriptors, and C calls between the hot-path methods. Every
# field of the Python classes is declared here, public so other modules (and tests) read them.

cimport cython

from gotunnel_builtin_proxy.balancer cimport Balancer, BackendState
from gotunnel_builtin_proxy.metrics cimport RouteCounters
from gotunnel_builtin_proxy.request cimport Downstream, Req
from gotunnel_builtin_proxy.router cimport Route, Router
from gotunnel_builtin_proxy.state cimport ProxyState
from gotunnel_builtin_proxy.upstream cimport Pool, UpstreamProtocol


# Not final: TlsClientProtocol extends it (cpdef calls stay C calls: both are extension types).
cdef class ClientProtocol(Downstream):
    cdef public ProxyState st
    cdef public object parser, sni, pipeline, upstream, upgrade_buf, tracer
    cdef public bint https, activity, write_paused, resp_done, eof, lan
    cdef public bytes xfp, peer_ip, forwarded
    cdef public tuple peer
    cdef public Req parsing, active
    cdef public int phase, paused
    cdef public double t_phase
    cdef public Py_ssize_t head_bytes, chunk_len, nin  # transport, nout: Downstream's

    cpdef close(self)
    cpdef _pause(self, int reason)
    cpdef _resume(self, int reason)
    cpdef _reject(self, status, message)
    @cython.locals(known=dict, out=list, head=list, by_host=dict, name=bytes, value=bytes, conn=bytes,
                   size=Py_ssize_t, lengths="unsigned long long", st=ProxyState, router=Router, route=Route,
                   balancer=Balancer, backend=BackendState)
    cpdef _dispatch(self, Req req)
    cpdef _local(self, Req req, bytes response)
    @cython.locals(pool=Pool)
    cpdef _send(self, Req req, BackendState backend)
    @cython.locals(up=UpstreamProtocol, backend=BackendState, route=Route)
    cpdef _attach(self, Req req, up)
    cpdef response_done(self, up, bint keep_alive)
    @cython.locals(counters=RouteCounters, route=Route)
    cpdef _count(self, Req req, double now)
    @cython.locals(now=double)
    cpdef _finish_exchange(self)


@cython.final
cdef class TlsClientProtocol(ClientProtocol):
    pass
