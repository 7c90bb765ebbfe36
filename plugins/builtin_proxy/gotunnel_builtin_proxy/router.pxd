# Types for the optional compiled build of router.py (see protocol.py's docstring): what the request
# path reads of a route and of the router becomes C fields. Declared in the dataclasses' field
# order: that order is the generated __init__'s.

cimport cython

from gotunnel_builtin_proxy.balancer cimport Balancer
from gotunnel_builtin_proxy.metrics cimport RouteCounters


@cython.final
cdef class Route:
    cdef public object tunnel
    cdef public Balancer balancer
    cdef public object name
    cdef public bytes req_add
    cdef public frozenset req_add_names
    cdef public frozenset req_remove
    cdef public bytes resp_add
    cdef public frozenset resp_drop
    cdef public double upstream_timeout
    cdef public RouteCounters stats
    cdef public bytes upstream_host
    cdef public bint host_from_backend
    cdef public bint https
    cdef public bint redirect_https


@cython.final
cdef class Router:
    cdef public object table
    cdef public dict exact
    cdef public dict wildcard
    cdef public dict by_host
    cdef public bytes hop_id
    cdef public bytes hop_line
    cdef public bytes hop_end
