# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``sse.pure_feed_lines``: the chunk's lines found with memchr instead of
``bytes.split``, which copied every line (a whole event's data) once more than needed. Each
line is handled as ``SSEParser._lines`` handles it: the stream's usual lines (``data:``,
``event:``, ``id:``, ``retry:`` and the blank line that dispatches) in C, on the parser's event
buffers held in a C struct for the length of the chunk; every other line through the parser's
own methods (the buffers written back first, read again after), so the spec's other rules stay
in sse.py alone. tests/unit/test_sse.py runs its tests against both, and a property test
compares them.

Measured on the bench's stream (every event carries ``retry: 5000``, as the vendor's do): the
per-line method calls and attribute reads were 7 µs of an event's 7.6 (slow machine).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp

from ingestor.stream.sse import SSEEvent

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        PyObject* (*tp_alloc)(PyTypeObject*, Py_ssize_t) except NULL
    void PyTuple_SET_ITEM(object, Py_ssize_t, object)

# An event made as ``tuple.__new__(SSEEvent, (type, data, id))`` makes it (the named tuple's
# own allocation, its three items set), in C: the call and the tuple between were 1.5% of
# the daemon's CPU (py-spy).
cdef PyTypeObject* EVENT_TYPE = <PyTypeObject*>SSEEvent


cdef object _sse_event(object event_type, object data, object last_id):
    cdef object made = <object>EVENT_TYPE.tp_alloc(EVENT_TYPE, 3)
    Py_DECREF(made)  # tp_alloc's new reference, now owned by ``made``
    Py_INCREF(event_type)
    PyTuple_SET_ITEM(made, 0, event_type)
    Py_INCREF(data)
    PyTuple_SET_ITEM(made, 1, data)
    Py_INCREF(last_id)
    PyTuple_SET_ITEM(made, 2, last_id)
    return made


# The event type's str, kept while the next event's type has the same bytes (the stream's few
# types, one after the other): a decode per event, and a hash of the new str at each lookup.
cdef object LAST_TYPE = None
cdef bytes LAST_TYPE_BYTES = b""


cdef object _event_type(const char* text, Py_ssize_t n):
    global LAST_TYPE, LAST_TYPE_BYTES
    if LAST_TYPE is not None and PyBytes_GET_SIZE(LAST_TYPE_BYTES) == n and memcmp(
        PyBytes_AS_STRING(LAST_TYPE_BYTES), text, n
    ) == 0:
        return LAST_TYPE
    value = PyUnicode_DecodeUTF8(text, n, "replace")
    LAST_TYPE, LAST_TYPE_BYTES = value, PyBytes_FromStringAndSize(text, n)
    return value


cdef class _Event:
    """The parser's buffers of the event being read (``SSEParser.reset`` names them)."""

    cdef object event_type, id_buffer, last_event_id
    cdef list data
    cdef Py_ssize_t data_len
    cdef bint id_field, skip_event, id_dispatched

    cdef void load(self, parser):
        self.event_type = parser._event_type
        self.id_buffer = parser._id_buffer
        self.last_event_id = parser.last_event_id
        self.data = parser._data
        self.data_len = parser._data_len
        self.id_field = parser._id_field
        self.skip_event = parser._skip_event
        self.id_dispatched = parser.id_dispatched

    cdef void store(self, parser):
        parser._event_type = self.event_type
        parser._id_buffer = self.id_buffer
        parser.last_event_id = self.last_event_id
        parser._data = self.data
        parser._data_len = self.data_len
        parser._id_field = self.id_field
        parser._skip_event = self.skip_event
        parser.id_dispatched = self.id_dispatched

    cdef void dispatch(self, list out):
        """``SSEParser._dispatch``."""
        self.last_event_id = self.id_buffer
        if self.id_field:
            self.id_dispatched, self.id_field = True, False
        if self.data and not self.skip_event:
            data = self.data[0] if len(self.data) == 1 else b"\n".join(self.data)
            out.append(_sse_event(self.event_type or "message", data, self.last_event_id))
        self.skip_event = False
        self.data = []
        self.data_len = 0
        self.event_type = ""


cdef object _digits(const char* p, Py_ssize_t n):
    """The value of 1 to 18 ASCII digits, else None (``bytes.isdigit`` and ``int``)."""
    cdef long long v = 0
    cdef Py_ssize_t i
    if not 0 < n <= 18:
        return None
    for i in range(n):
        if p[i] < 48 or p[i] > 57:  # not 0-9
            return None
        v = v * 10 + (p[i] - 48)
    return v


def feed_lines(parser, bytes chunk, list out):
    """``parser._lines`` over the chunk's complete lines, then ``parser._buffer_tail``."""
    cdef const char* buf = PyBytes_AS_STRING(chunk)
    cdef const char* line
    cdef Py_ssize_t size = PyBytes_GET_SIZE(chunk)
    cdef Py_ssize_t start = 0, length, new_len
    cdef Py_ssize_t limit = parser._line_limit
    cdef Py_ssize_t max_event = parser.max_event_bytes
    cdef const char* nl = <const char*>memchr(buf, b"\n", size)
    cdef _Event ev
    if nl == NULL:
        parser._buffer_tail(chunk)
        return
    if parser._skip_line or parser._partial:  # the first line ends one begun before
        length = nl - buf
        parser._lines([PyBytes_FromStringAndSize(buf, length)], out)
        start = length + 1
    ev = _Event.__new__(_Event)
    ev.load(parser)
    while True:
        line = buf + start
        nl = <const char*>memchr(line, b"\n", size - start)
        if nl == NULL:
            break
        length = nl - line
        if length == 0:
            ev.dispatch(out)
        elif ev.data_len + length > limit:
            ev.store(parser)
            parser._oversize(ev.data_len + length)
            ev.load(parser)
        elif length >= 6 and memcmp(line, b"data: ", 6) == 0:
            if not ev.skip_event:  # else ignored, as _field ignores it
                new_len = ev.data_len + length - 6 + 1
                if new_len - 1 > max_event:  # SSEParser._data_line
                    ev.store(parser)
                    parser._oversize(new_len - 1)
                    ev.load(parser)
                else:
                    ev.data.append(PyBytes_FromStringAndSize(line + 6, length - 6))
                    ev.data_len = new_len
        elif length >= 7 and memcmp(line, b"event: ", 7) == 0:
            ev.event_type = _event_type(line + 7, length - 7)
        elif length >= 4 and memcmp(line, b"id: ", 4) == 0:
            if memchr(line, 0, length) == NULL:  # else ignored, as _field ignores it
                ev.id_buffer = PyUnicode_DecodeUTF8(line + 4, length - 4, "replace")
                ev.id_field = True
        elif (
            length >= 7
            and memcmp(line, b"retry: ", 7) == 0
            and (retry := _digits(line + 7, length - 7)) is not None
        ):
            parser.retry_ms = retry
        elif line[0] != b":":  # not a comment
            ev.store(parser)
            parser._field(PyBytes_FromStringAndSize(line, length))
            ev.load(parser)
        start += length + 1
    ev.store(parser)
    if start < size:
        parser._buffer_tail(PyBytes_FromStringAndSize(buf + start, size - start))
