# Types for the optional compiled build of balancer.py (see protocol.py's docstring): the fields the
# request path reads per request (`single`, `healthy`, `ejected_until`, `pool`, `prefix`) become C
# fields. Declared in the dataclasses' field order: that order is the generated __init__'s.

cimport cython


@cython.final
cdef class BackendState:
    cdef public object backend
    cdef public object pool
    cdef public object health
    cdef public bytes prefix
    cdef public bytes host_header
    cdef public long long current
    cdef public bint healthy
    cdef public double ejected_until
    cdef public long long successes
    cdef public long long failures
    cdef public object last_error
    cdef public object recorded_h1


@cython.final
cdef class Balancer:
    cdef public object tunnel_name
    cdef public object states
    cdef public BackendState single
