# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``sse.pure_feed_lines``: the chunk's lines found with memchr instead of
``bytes.split``, which copied every line (a whole event's data) once more than needed and was
a third of the parse on the bench's stream. Each line is handled as ``SSEParser._lines``
handles it: the usual lines (``data:``, ``event:``, ``id:``) inline as there, everything else
through the parser's own methods, so the spec's other rules stay in sse.py alone.
tests/unit/test_sse.py runs its tests against both, and a property test compares them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp


def feed_lines(parser, bytes chunk, list out):
    """``parser._lines`` over the chunk's complete lines, then ``parser._buffer_tail``."""
    cdef const char* buf = PyBytes_AS_STRING(chunk)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(chunk)
    cdef Py_ssize_t start = 0, length
    cdef Py_ssize_t limit = parser._line_limit
    cdef const char* nl = <const char*>memchr(buf, b"\n", size)
    if nl == NULL:
        parser._buffer_tail(chunk)
        return
    if parser._skip_line or parser._partial:  # the first line ends one begun before
        length = nl - buf
        parser._lines([PyBytes_FromStringAndSize(buf, length)], out)
        start = length + 1
    while True:
        nl = <const char*>memchr(buf + start, b"\n", size - start)
        if nl == NULL:
            break
        length = nl - (buf + start)
        if length == 0:
            parser._dispatch(out)
        elif parser._data_len + length > limit:
            parser._oversize(parser._data_len + length)
        elif (
            length >= 6 and memcmp(buf + start, b"data: ", 6) == 0 and not parser._skip_event
        ):
            parser._data_line(PyBytes_FromStringAndSize(buf + start + 6, length - 6))
        elif length >= 7 and memcmp(buf + start, b"event: ", 7) == 0:
            parser._event_type = PyUnicode_DecodeUTF8(buf + start + 7, length - 7, "replace")
        elif (
            length >= 4
            and memcmp(buf + start, b"id: ", 4) == 0
            and memchr(buf + start, 0, length) == NULL
        ):
            parser._id_buffer = PyUnicode_DecodeUTF8(buf + start + 4, length - 4, "replace")
            parser._id_field = True
        elif buf[start] != b":":  # not a comment
            parser._field(PyBytes_FromStringAndSize(buf + start, length))
        start += length + 1
    if start < size:
        parser._buffer_tail(PyBytes_FromStringAndSize(buf + start, size - start))
