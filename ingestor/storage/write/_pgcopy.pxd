# The binary COPY writer's primitives, for the compiled twins that write a COPY stream from
# their own objects instead of records (``_batch.pyx``: the current-state rows; ``_history.pyx``:
# history's rows that go straight in).

from cpython.ref cimport PyObject


cdef struct Buf:
    PyObject* obj  # the bytes object written into (its size is ``cap`` until finish)
    char* data
    Py_ssize_t size
    Py_ssize_t cap

cdef int start(Buf* b, Py_ssize_t hint) except -1  # a stream of about ``hint`` bytes: header
cdef int begin_tuple(Buf* b, Py_ssize_t ncols) except -1
cdef int field(Buf* b, char code, object value) except -1  # one value, by its type letter
cdef int int8(Buf* b, long long value) except -1  # a bigint field from C
cdef bytes finish(Buf* b)  # the trailer, and the stream as bytes (``b`` is then empty)
cdef void discard(Buf* b) noexcept  # frees an abandoned stream
