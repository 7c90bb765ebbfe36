# Types for the optional compiled build of state.py (see protocol.py's docstring): the engine's
# shared state, read by every request (`router`, `hook_on`, the counters), as C fields. Declared in
# the dataclass's field order: that order is the generated __init__'s.

cimport cython

from gotunnel_builtin_proxy.router cimport Router


@cython.final
cdef class ProxyState:
    cdef public object loop
    cdef public object settings
    cdef public Router router
    cdef public object hook
    cdef public bint hook_on
    cdef public bint closing
    cdef public set conns
    cdef public set tasks
    cdef public long long connections_total
    cdef public long long requests_total
    cdef public long long rejected_total
    cdef public long long upstream_errors
    cdef public object log
    cdef public object h2
    cdef public object tracer
    cdef public object h2_accept
    cdef public bint via
