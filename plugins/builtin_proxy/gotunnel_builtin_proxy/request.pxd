# Types for the optional compiled build of request.py (see protocol.py's docstring).

cimport cython


@cython.final
cdef class Req:
    cdef public bytes url, method
    cdef public list headers, head_parts
    cdef public bint http11, keep_alive, upgrade, is_head, head_done, complete, chunked, discard, local
    cdef public object body, route, backend, tried, span
    cdef public Py_ssize_t body_size
    cdef public double t_sent
    cdef public double t0
    cdef public int status


# Not final: protocol.ClientProtocol extends it (and overrides response_done, a C call here).
cdef class Downstream:
    cdef public object transport
    cdef public Py_ssize_t nout

    cpdef response_done(self, up, bint keep_alive)
