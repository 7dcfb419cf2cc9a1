# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of pgcopy.py: the same bytes, the same error classes (a property test
holds the two equal). Read pgcopy.py first; this file only makes it fast.

Measured on the bench's history and current-state records: see pgcopy.py's note and the
README's benchmark section.
"""

from cpython.bytes cimport (
    _PyBytes_Resize,
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.datetime cimport PyDateTime_Check, PyDateTime_DATE_GET_TZINFO, import_datetime
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_Check
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, PyObject
from cpython.unicode cimport PyUnicode_Check
from libc.math cimport isinf
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from ingestor.domain._civil cimport wall_micros

from datetime import datetime, timezone

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    object PySequence_Fast(object, const char*)
    Py_ssize_t PySequence_Fast_GET_SIZE(object)
    void* PySequence_Fast_ITEMS(object)  # PyObject**
    bint PyBool_Check(object)
    bint PyBytes_Check(object)
    bint PyList_Check(object)
    bint PyTuple_Check(object)
    double PyLong_AsDouble(object) except? -1.0
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1

import_datetime()

cdef object UTC = timezone.utc
cdef object PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
cdef int64_t FLOAT8_OID = 701
DEF INITIAL = 1 << 16


cdef int _grow(Buf* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap
    if b.size + need <= cap:
        return 0
    while b.size + need > cap:
        cap *= 2
    _PyBytes_Resize(&b.obj, cap)  # on failure it has freed the object and set b.obj NULL
    b.data = PyBytes_AS_STRING(<object>b.obj)
    b.cap = cap
    return 0


cdef inline int _put32(Buf* b, int32_t v) except -1:
    cdef uint32_t u = <uint32_t>v
    _grow(b, 4)
    cdef uint8_t* p = <uint8_t*>(b.data + b.size)
    p[0] = (u >> 24) & 0xFF
    p[1] = (u >> 16) & 0xFF
    p[2] = (u >> 8) & 0xFF
    p[3] = u & 0xFF
    b.size += 4
    return 0


cdef inline int _put64(Buf* b, int64_t v) except -1:
    cdef uint64_t u = <uint64_t>v
    cdef int i
    _grow(b, 8)
    cdef uint8_t* p = <uint8_t*>(b.data + b.size)
    for i in range(8):
        p[i] = (u >> (56 - 8 * i)) & 0xFF
    b.size += 8
    return 0


cdef inline int _put(Buf* b, const char* src, Py_ssize_t n) except -1:
    _grow(b, n)
    memcpy(b.data + b.size, src, n)
    b.size += n
    return 0


cdef int64_t _int(object value, int bits) except? -1:
    cdef long long v
    cdef int overflow = 0
    if not PyLong_Check(value):
        raise TypeError(
            f"binary COPY: an integer column needs an int, got {type(value).__name__}"
        )
    # Not PyLong_AsLongLong: past one digit it goes through _PyLong_AsByteArray (684
    # instructions per odd on the bench, for the odd keys and ev).
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        v = -1
        bits = -1
    if bits < 0 or (bits < 63 and not (-(1LL << bits) <= v < (1LL << bits))):
        raise ValueError(f"binary COPY: {value} is out of range for its integer column")
    return v


cdef double _float(object value) except? -1.0:
    if PyFloat_Check(value):
        return PyFloat_AS_DOUBLE(value)
    if PyLong_Check(value):
        try:
            return PyLong_AsDouble(value)
        except OverflowError:
            raise ValueError("binary COPY: integer too large for a float") from None
    raise TypeError(f"binary COPY: a float column needs a number, got {type(value).__name__}")


cdef int64_t _micros(object value) except? -1:
    if not PyDateTime_Check(value):
        raise TypeError(f"binary COPY: timestamptz needs an aware datetime, got {value!r}")
    if <object>PyDateTime_DATE_GET_TZINFO(value) is not UTC:  # UTC itself needs no call
        if value.utcoffset() is None:
            raise TypeError(f"binary COPY: timestamptz needs an aware datetime, got {value!r}")
        delta = value - PG_EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return wall_micros(value, 10957)  # from 2000-01-01, PostgreSQL's epoch


cdef int _array(Buf* b, object value) except -1:
    """A one-dimensional float8[]: its length patched in once the elements are written."""
    cdef Py_ssize_t length_at, start
    cdef bint has_null = False
    if not (PyList_Check(value) or PyTuple_Check(value)):
        raise TypeError(f"binary COPY: an array needs a list, got {type(value).__name__}")
    if len(value) == 0:
        _put32(b, 12)
        _put32(b, 0)
        _put32(b, 0)
        return _put32(b, <int32_t>FLOAT8_OID)
    for item in value:
        if item is None:
            has_null = True
    _put32(b, 0)
    length_at = b.size - 4
    _put32(b, 1)
    _put32(b, 1 if has_null else 0)
    _put32(b, <int32_t>FLOAT8_OID)
    _put32(b, <int32_t>len(value))
    _put32(b, 1)
    start = b.size
    for item in value:
        if item is None:
            _put32(b, -1)
        else:
            _put32(b, 8)
            _putf8(b, _float(item))
    _patch32(b, length_at, <int32_t>(20 + b.size - start))
    return 0


cdef inline void _patch32(Buf* b, Py_ssize_t at, int32_t v):
    cdef uint32_t u = <uint32_t>v
    cdef uint8_t* p = <uint8_t*>(b.data + at)
    p[0] = (u >> 24) & 0xFF
    p[1] = (u >> 16) & 0xFF
    p[2] = (u >> 8) & 0xFF
    p[3] = u & 0xFF


cdef inline int _putf8(Buf* b, double d) except -1:
    cdef uint64_t u
    memcpy(&u, &d, 8)
    return _put64(b, <int64_t>u)


cdef int field(Buf* b, char code, object value) except -1:
    cdef double d
    cdef float f
    cdef uint32_t u
    cdef Py_ssize_t n
    cdef const char* s
    if value is None:
        return _put32(b, -1)
    if code == b"q":
        _put32(b, 8)
        return _put64(b, _int(value, 63))
    if code == b"h":
        _put32(b, 2)
        _grow(b, 2)
        n = _int(value, 15)
        (<uint8_t*>(b.data + b.size))[0] = (<uint32_t>n >> 8) & 0xFF
        (<uint8_t*>(b.data + b.size))[1] = <uint32_t>n & 0xFF
        b.size += 2
        return 0
    if code == b"f":
        d = _float(value)
        f = <float>d
        if isinf(f) and not isinf(d):
            raise ValueError(f"binary COPY: {d!r} is out of range for real")
        memcpy(&u, &f, 4)
        _put32(b, 4)
        return _put32(b, <int32_t>u)
    if code == b"d":
        _put32(b, 8)
        return _putf8(b, _float(value))
    if code == b"t":
        if not PyUnicode_Check(value):
            raise TypeError(f"binary COPY: text needs a str, got {type(value).__name__}")
        s = PyUnicode_AsUTF8AndSize(value, &n)
        _put32(b, <int32_t>n)
        return _put(b, s, n)
    if code == b"b":
        if not PyBool_Check(value):
            raise TypeError(f"binary COPY: boolean needs a bool, got {type(value).__name__}")
        _put32(b, 1)
        _grow(b, 1)
        b.data[b.size] = 1 if value is True else 0
        b.size += 1
        return 0
    if code == b"T":
        _put32(b, 8)
        return _put64(b, _micros(value))
    if code == b"y":
        if not PyBytes_Check(value):
            raise TypeError(f"binary COPY: bytea needs bytes, got {type(value).__name__}")
        n = PyBytes_GET_SIZE(value)
        _put32(b, <int32_t>n)
        return _put(b, PyBytes_AS_STRING(value), n)
    if code == b"D":
        return _array(b, value)
    raise TypeError(f"binary COPY: unknown type letter {chr(code)!r}")


cdef int int8(Buf* b, long long value) except -1:
    _put32(b, 8)
    return _put64(b, value)


cdef int start(Buf* b, Py_ssize_t hint) except -1:
    """The stream is written into a bytes object sized by ``hint`` (the bytes expected) and
    trimmed at the end: no copy of it is made (a 3 MB copy per flush, and the reallocs that
    grew a 64 kB buffer to it, were 1.1% of the daemon's CPU)."""
    b.obj = NULL
    b.size = 0
    b.cap = max(INITIAL, hint)
    data = PyBytes_FromStringAndSize(NULL, b.cap)
    Py_INCREF(data)  # the Buf's own reference (``data``'s goes at the return)
    b.obj = <PyObject*>data
    b.data = PyBytes_AS_STRING(data)
    return _put(b, b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00", 19)


cdef int begin_tuple(Buf* b, Py_ssize_t ncols) except -1:
    _grow(b, 2)
    (<uint8_t*>(b.data + b.size))[0] = (<uint32_t>ncols >> 8) & 0xFF
    (<uint8_t*>(b.data + b.size))[1] = <uint32_t>ncols & 0xFF
    b.size += 2
    return 0


cdef bytes finish(Buf* b):
    """The trailer, and the stream as bytes; the Buf is then empty."""
    _put(b, b"\xff\xff", 2)
    _PyBytes_Resize(&b.obj, b.size)  # shrinks in place
    out = <bytes>b.obj
    Py_DECREF(out)  # the Buf's reference: ``out`` holds its own
    b.obj = NULL
    b.data = NULL
    return out


cdef void discard(Buf* b) noexcept:
    """Free what an abandoned stream holds."""
    Py_XDECREF(b.obj)
    b.obj = NULL
    b.data = NULL


def payload(records, str codes):
    """The whole COPY stream (header, one tuple per record, trailer)."""
    cdef Buf b
    cdef Py_ssize_t ncols = len(codes), i, n
    cdef bytes code_bytes = codes.encode("ascii")
    cdef const char* cs = code_bytes
    cdef void** items
    # About 9 bytes a field (history's rows on the bench: 66 bytes for 8 fields)
    start(&b, len(records) * ncols * 9)
    try:
        for record in records:
            fast = PySequence_Fast(record, "binary COPY: a record must be a sequence")
            n = PySequence_Fast_GET_SIZE(fast)
            if n != ncols:
                raise TypeError(f"binary COPY: a record of {n} values for {ncols}")
            begin_tuple(&b, ncols)
            items = <void**>PySequence_Fast_ITEMS(fast)
            for i in range(ncols):
                field(&b, cs[i], <object>items[i])
    except BaseException:
        discard(&b)
        raise
    return finish(&b)
