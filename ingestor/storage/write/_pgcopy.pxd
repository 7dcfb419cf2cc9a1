# The binary COPY writer's primitives, for the compiled twins that write a COPY stream from
# their own objects instead of records (``_batch.pyx``: the current-state rows).

cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap

cdef int start(Buf* b) except -1  # allocates and writes the header
cdef int begin_tuple(Buf* b, Py_ssize_t ncols) except -1
cdef int field(Buf* b, char code, object value) except -1  # one value, by its type letter
cdef bytes finish(Buf* b)  # the trailer, and the stream as bytes (``b`` is then freed)
