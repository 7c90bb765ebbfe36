# Types for the optional compiled build of metrics.py (see protocol.py's docstring): the counters
# are C fields (one list for the status/latency slots), and `count` is a C call from the compiled
# client protocol, its bucket search a loop over C doubles.

cimport cython


@cython.final
cdef class RouteCounters:
    cdef public list counts
    cdef public double latency_sum
    cdef public long long bytes_in, bytes_out, upstream_errors

    @cython.locals(cls=int, slot=Py_ssize_t, bound=double)
    cpdef count(self, int status, double seconds, long long bytes_in, long long bytes_out)
