# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``fast.pure_fast_odds`` (and of ``fast.pure_rows``): the same event, its
NUL check, entry id, times and order keys done in C, and each row built as the compiled OddRow
(``_rows.pyx``) with its fields set in C instead of through a 28-argument call. Read fast.py
first: this file only makes it fast; tests/unit/test_twins.py and test_scanner.py hold the two
equal.

The common shape of an event does not go through msgspec at all: a scanner (at the end of this
file) reads its text straight into rows, and makes no new str for a value the field's last odd
already had. What it is not sure of goes to msgspec's path as before.

Measured on the bench's events (µs per event, on a slow machine): the NUL search 2.2 -> memchr,
the entry id 2.3 (``parse_entry_id`` in Python), the datetime and order key of a timestamp 2.4
(``fromtimestamp`` and ``struct.pack``). Instructions per odd (callgrind, the bench's events,
decoded and freed): msgspec's path 15,310, the scanner 12,920 (``fast_odds`` alone 13,160 ->
11,290).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport datetime_new, import_datetime
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.math cimport fabs, rint
from libc.string cimport memchr, memcmp, memcpy

cimport cython

from ingestor.domain._civil cimport civil_from_days
from ingestor.domain._rows cimport OddRow

import time
from dataclasses import fields as dataclass_fields
from datetime import UTC
from types import MemberDescriptorType

import msgspec

from ingestor.domain.errors import EntryIdError
from ingestor.domain.events import DecodedEvent, Kind, parse_entry_id
from ingestor.domain.fast import _DECODER, _MAX_MICROS, MAX_FUTURE_MS, _Odd, _settled_at

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "structmember.h":
    int T_OBJECT
    int T_OBJECT_EX

import_datetime()

cdef object SETTLED = Kind.SETTLED
cdef object UTC_ = UTC
cdef object DECODE = _DECODER.decode
cdef tuple DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
cdef object now = time.time
cdef long long _LIMIT = _MAX_MICROS
# Typed, so that the arithmetic below stays in C: Cython makes a literal beyond 32 bits a
# Python int, and ``micros // 86_400_000_000`` was then two conversions and a Python floor
# division (800 instructions) per event, ``m > 2**53`` a Python int per number.
cdef long long DAY_US = 86_400_000_000
cdef long long HOUR_US = 3_600_000_000
cdef long long EXACT_BELOW = 9_007_199_254_740_992  # 2**53: beyond it a double is not exact
cdef double FUTURE_MS = MAX_FUTURE_MS


# Where each field of a decoded odd lives in the struct (msgspec's fields are slots: member
# descriptors). Read there, a field costs a load; through getattr, 22 per odd were 3% of the
# daemon's CPU. Any other layout (a msgspec that changed it) reads through getattr as before.
FIELDS = _Odd.__struct_fields__
cdef Py_ssize_t OFFSETS[32]
cdef object ODD = _Odd


cdef bint _slots(object cls, object names, Py_ssize_t* offsets) except -1:
    """Where each of ``names`` lives in an instance of ``cls``: False unless every one is a
    plain object slot (a member descriptor)."""
    cdef PyMemberDescrObject* member
    for i, name in enumerate(names):
        descr = cls.__dict__.get(name)
        if type(descr) is not MemberDescriptorType:
            return False
        member = <PyMemberDescrObject*>descr
        if member.d_member.type != T_OBJECT_EX and member.d_member.type != T_OBJECT:
            return False
        offsets[i] = member.d_member.offset
    return True


cdef bint _offsets() except -1:
    return len(FIELDS) <= 32 and _slots(ODD, FIELDS, OFFSETS)


cdef bint BY_OFFSET = _offsets()
READS_SLOTS = BY_OFFSET  # for the twin test: the fast reads are on

# A DecodedEvent made as its constructor makes it, its slots written in C: the dataclass's
# __init__ (a Python frame of 13 stores) was 3,000 instructions per event (callgrind).
# Only while every field is a plain slot, in this order; otherwise through the constructor.
cdef tuple EVENT_FIELDS = (
    "group_key", "event_type", "entry_id", "event_id", "received_at", "odds", "fixtures",
    "advances_cursor", "rejected", "dead_letters", "epoch", "entry", "gaps",
)
cdef Py_ssize_t EVENT_OFFSETS[13]
cdef object EVENT = DecodedEvent
cdef object NEW_OBJECT = object.__new__


cdef bint _event_offsets() except -1:
    if tuple([f.name for f in dataclass_fields(EVENT)]) != EVENT_FIELDS:
        return False
    if EVENT.__new__ is not NEW_OBJECT or hasattr(EVENT, "__post_init__"):
        return False
    return _slots(EVENT, EVENT_FIELDS, EVENT_OFFSETS)


cdef bint EVENT_BY_OFFSET = _event_offsets()
MAKES_EVENTS = EVENT_BY_OFFSET  # for the twin test: events are made by their slots


cdef inline void _put(object obj, Py_ssize_t i, object value):
    cdef PyObject** slot = <PyObject**>((<char*><PyObject*>obj) + EVENT_OFFSETS[i])
    Py_INCREF(value)
    Py_XDECREF(slot[0])
    slot[0] = <PyObject*>value


cdef object _event(str group_key, str event_type, str entry_id, str event_id,
                   object received_at, tuple entry, list odds):
    """``DecodedEvent(group_key, event_type, entry_id, event_id, received_at, odds, [], True,
    [], [], 0, entry)``, its gaps the default ()."""
    if not EVENT_BY_OFFSET:
        return DecodedEvent(
            group_key, event_type, entry_id, event_id, received_at, odds, [], True, [], [], 0,
            entry,
        )
    event = NEW_OBJECT(EVENT)
    _put(event, 0, group_key)
    _put(event, 1, event_type)
    _put(event, 2, entry_id)
    _put(event, 3, event_id)
    _put(event, 4, received_at)
    _put(event, 5, odds)
    _put(event, 6, [])
    _put(event, 7, True)
    _put(event, 8, [])
    _put(event, 9, [])
    _put(event, 10, 0)
    _put(event, 11, entry)
    _put(event, 12, ())
    return event


cdef Py_ssize_t ID = FIELDS.index("id"), ODD_ID = FIELDS.index("odd_id")
cdef Py_ssize_t SPORTSBOOK = FIELDS.index("sportsbook"), FIXTURE = FIELDS.index("fixture_id")
cdef Py_ssize_t GAME = FIELDS.index("game_id"), SPORT = FIELDS.index("sport")
cdef Py_ssize_t LEAGUE = FIELDS.index("league"), MARKET = FIELDS.index("market")
cdef Py_ssize_t NAME = FIELDS.index("name"), SELECTION = FIELDS.index("selection")
cdef Py_ssize_t LINE = FIELDS.index("selection_line"), PLAYER = FIELDS.index("player_id")
cdef Py_ssize_t TEAM = FIELDS.index("team_id"), VERSION = FIELDS.index("version_id")
cdef Py_ssize_t POINTS = FIELDS.index("points"), PRICE = FIELDS.index("price")
cdef Py_ssize_t MAIN = FIELDS.index("is_main"), LIVE = FIELDS.index("is_live")
cdef Py_ssize_t GROUPING = FIELDS.index("grouping_key"), SETTLEMENT = FIELDS.index("settlement")
cdef Py_ssize_t SETTLED_AT = FIELDS.index("settled_at"), TIMESTAMP = FIELDS.index("timestamp")


cdef bint _nul_escape(bytes data):
    """Whether the JSON text holds ``\\u0000``: a memchr for each backslash (rare in odds)."""
    cdef const char* buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data), at = 0
    cdef const char* hit
    while at < size:
        hit = <const char*>memchr(buf + at, b"\\", size - at)
        if hit == NULL:
            return False
        at = hit - buf
        if size - at >= 6 and memcmp(hit, b"\\u0000", 6) == 0:
            return True
        at += 1
    return False


cdef tuple _parsed(str entry):
    """``parse_entry_id``: plain ``<digits>[-<digits>]`` of 18 digits at most in C, anything
    else (and every error) through it. None where it raises."""
    cdef Py_ssize_t n = len(entry)
    cdef long long ms = 0, seq = 0
    cdef int digits = 0
    cdef bint dash = False
    cdef Py_UCS4 c
    if 0 < n <= 37:
        for c in entry:
            if c == u"-" and not dash and digits:
                dash, digits = True, 0
            elif u"0" <= c <= u"9" and digits < 18:
                digits += 1
                if dash:
                    seq = seq * 10 + (<long long>c - 48)
                else:
                    ms = ms * 10 + (<long long>c - 48)
            else:
                break
        else:
            if digits:
                return (ms, seq)
    try:
        return parse_entry_id(entry)
    except EntryIdError:
        return None


cdef inline bint _future(tuple entry) except -1:
    """Whether the entry's time is more than MAX_FUTURE_MS ahead of the clock (in C doubles:
    an entry's ms is exact in one, and the Python arithmetic per event cost 200 instructions)."""
    return <double>entry[0] > <double>now() * 1000.0 + FUTURE_MS


cdef object _utc(long long micros):
    """``fast.utc_micros`` (0 <= micros < year 10000): the datetime made from its fields."""
    cdef long long days = micros // DAY_US
    cdef long long rest = micros - days * DAY_US
    cdef int y, m, d
    civil_from_days(days, &y, &m, &d)
    return datetime_new(
        y,
        m,
        d,
        <int>(rest // HOUR_US),
        <int>(rest // 60_000_000 % 60),
        <int>(rest // 1_000_000 % 60),
        <int>(rest % 1_000_000),
        UTC_,
    )


cdef inline void _be64(unsigned char* out, unsigned long long v) noexcept:
    cdef int i
    for i in range(7, -1, -1):
        out[i] = v & 0xFF
        v >>= 8


cdef bytes _order_key(long long micros, long long ms, long long seq, int rank):
    """``events.order_key`` of a parsed entry (both parts below 2**63, micros >= 0)."""
    cdef unsigned char buf[25]
    _be64(buf, micros)
    _be64(buf + 8, ms)
    _be64(buf + 16, seq)
    buf[24] = rank
    return PyBytes_FromStringAndSize(<char*>buf, 25)


cdef inline tuple _made(dict times, long long micros, long long ms, long long seq, int rank):
    """The datetime and order key of a timestamp, made once per event."""
    made = times.get(micros)
    if made is None:
        made = times[micros] = (_utc(micros), _order_key(micros, ms, seq, rank))
    return <tuple>made


def fast_odds(
    str group_key,
    str stream,
    str event_type,
    object kind,
    bytes data,
    str event_id,
    object received_at,
):
    """The event's rows, or None when the careful path must decode it."""
    if _nul_escape(data):
        return None
    scanned = _scan(data, group_key, stream, event_type, kind, event_id, received_at)
    if scanned is not None:
        return scanned
    try:
        payload = DECODE(data)
    except DECODE_ERRORS:
        return None
    entry_id = payload.entry_id or event_id
    entry = _parsed(entry_id)
    if entry is None or _future(entry) or not payload.data:
        return None
    # Every field given, in order: the dataclass's keyword and its default factories (a call
    # of list() each) cost 106 instructions per odd (callgrind, the worker's path: 20,674 ->
    # 20,568).
    event = _event(group_key, event_type, entry_id, event_id, received_at, entry, [])
    return event if _fill(payload.data, event, kind, stream, entry) else None


def rows(list odds, object event, object kind, str stream, tuple entry):
    """Append a row per odd to ``event.odds``; False when the careful path must judge one."""
    return _fill(odds, event, kind, stream, entry)


@cython.final
@cython.no_gc  # its fields (strs, ints, a Kind, the event's list, a dict of tuples) never
# refer back to it: no cycle runs through it, and one tracked object less per event
cdef class _Event:
    """What every row of one event shares: its kind, entry and ids, and the datetime and order
    key of each timestamp, made once per event (its odds mostly share one)."""

    cdef object kind, stream, entry_id, event_id, carries
    cdef list out
    cdef dict times
    cdef tuple made
    cdef bint settled
    cdef int rank
    cdef long long ems, eseq, last


cdef _Event _shared(list out, object entry_id, object event_id, object kind, str stream,
                    tuple entry):
    """The shared part of an event whose rows go to ``out`` (made in C: a constructor's
    argument parsing and three attribute reads of the event were 900 instructions each)."""
    cdef _Event ev = _Event.__new__(_Event)
    ev.kind, ev.stream = kind, stream
    ev.settled = kind is SETTLED
    ev.rank = kind
    ev.carries = not ev.settled
    ev.ems, ev.eseq = entry[0], entry[1]
    ev.entry_id, ev.event_id = entry_id, event_id
    ev.out = out
    ev.times = {}
    ev.made = None
    ev.last = -1
    return ev


cdef inline object _v(PyObject** v, Py_ssize_t field):
    """Field ``field`` of an odd as gathered (NULL: not sent, None as msgspec's default)."""
    return None if v[field] == NULL else <object>v[field]


cdef int _row(PyObject** v, _Event ev) except -1:
    """Append the row of one odd (its fields in ``v``, in ``FIELDS`` order); 0 when the
    careful path must judge it."""
    cdef object micros, settled_at
    cdef long long us
    cdef OddRow row
    uid = _v(v, ID)
    if not uid:
        return 0
    ts = _v(v, TIMESTAMP)
    if type(ts) is float and fabs(<double>ts) < 9.0e9:  # µs below 2**53: exact in C
        # rint rounds half to even, as round() does; the rest goes through round().
        us = <long long>rint(<double>ts * 1000000.0)
    else:
        micros = ev.ems * 1000 if ts is None else round(ts * 1_000_000)
        if not 0 <= micros < _LIMIT:
            return 0
        us = micros
    if not 0 <= us < _LIMIT:
        return 0
    if us != ev.last:  # odds of an event mostly share their timestamp
        ev.last = us
        ev.made = _made(ev.times, us, ev.ems, ev.eseq, ev.rank)
    if ev.settled:
        settled_at = _settled_at(_v(v, SETTLED_AT))
        if settled_at is False:
            return 0
    else:
        settled_at = None
    row = OddRow.__new__(OddRow)
    row.id = uid
    row.kind = ev.kind
    row.stream = ev.stream
    row.odd_id = _v(v, ODD_ID)
    row.sportsbook = _v(v, SPORTSBOOK) or None
    row.fixture_id = _v(v, FIXTURE)
    row.game_id = _v(v, GAME)
    row.sport = _v(v, SPORT)
    row.league = _v(v, LEAGUE)
    row.market = _v(v, MARKET)
    row.name = _v(v, NAME)
    row.selection = _v(v, SELECTION)
    row.selection_line = _v(v, LINE)
    row.player_id = _v(v, PLAYER) or None
    row.team_id = _v(v, TEAM) or None
    row.version_id = _v(v, VERSION)
    row.points = _v(v, POINTS)
    row.price = _v(v, PRICE)
    row.is_main = _v(v, MAIN)
    row.is_live = _v(v, LIVE)
    row.grouping_key = _v(v, GROUPING)
    row.settlement = _v(v, SETTLEMENT) if ev.settled else None
    row.settled_at = settled_at
    row.source_ts = ev.made[0]
    row.entry_id = ev.entry_id
    row.event_id = ev.event_id
    row.order_key = ev.made[1]
    row.carries_price = ev.carries
    ev.out.append(row)
    return 1


cdef bint _fill(list odds, object event, object kind, str stream, tuple entry) except -1:
    cdef _Event ev = _shared(event.odds, event.entry_id, event.event_id, kind, stream, entry)
    cdef PyObject* v[NF]
    cdef Py_ssize_t i
    cdef bint direct
    cdef tuple values
    for o in odds:
        direct = BY_OFFSET and type(o) is ODD
        if direct:
            for i in range(NF):
                v[i] = (<PyObject**>((<char*><PyObject*>o) + OFFSETS[i]))[0]
                if v[i] == NULL:  # unset: read through getattr below, which names it
                    direct = False
                    break
        if not direct:
            values = tuple([getattr(o, name) for name in FIELDS])
            for i in range(NF):
                v[i] = PyTuple_GET_ITEM(values, i)
        if not _row(v, ev):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The scanner: the common shape of an odds event read straight into rows, without msgspec's
# struct in between and without a new str for a value the field's last odd also had (sport,
# league, sportsbook, market, fixture: the same few strings odd after odd).
#
# It takes only what it is sure of: keys and values without escapes, numbers without exponent
# (18 digits at most, a fraction's below 2**53), no duplicate key, "entry_id" before "data", and
# nothing but scalars under keys it does not know. Anything else, and every event whose rows
# would be refused (a future entry, no odds, an odd the careful path must judge), it leaves to
# msgspec's path above, which decides as before. Twin tests hold it to the pure path.
# ---------------------------------------------------------------------------------------------

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyFloat_FromDouble(double)
    object PyLong_FromLongLong(long long)
    object PyUnicode_FromStringAndSize(const char* s, Py_ssize_t size)

cdef enum:
    NF = 22  # fields of an odd

cdef object NULL_VALUE = object()  # a field sent as null

cdef enum Shape:
    TEXT, REAL, FLAG, WHOLE

cdef enum Span:
    NOT_PLAIN, ASCII, UTF8

cdef double POW10[19]  # 10**places for the 18 digits a number may have (all exact)
for _b in range(19):
    POW10[_b] = 10.0 ** _b

if len(FIELDS) != NF:
    raise ImportError(f"the scanner reads {NF} fields of an odd, msgspec's struct has {len(FIELDS)}")
cdef int SHAPES[NF]
cdef const char* KEYS[NF]
cdef Py_ssize_t KEY_LENGTHS[NF]
cdef tuple KEY_BYTES = tuple([name.encode() for name in FIELDS])  # KEYS' buffers, kept alive


cdef bint _keys() except -1:
    """Each field's key and the shape of its value (from the struct's annotations)."""
    cdef bytes key
    shape_of = {"str | None": TEXT, "float | None": REAL, "bool | None": FLAG}
    for i, name in enumerate(FIELDS):
        key = KEY_BYTES[i]
        KEYS[i] = key
        KEY_LENGTHS[i] = len(key)
        SHAPES[i] = shape_of.get(str(_Odd.__annotations__[name]), WHOLE)
    return True


_keys()

# The last str made for each text field, and its bytes: reused while the next value is equal.
cdef PyObject* LAST[NF]
cdef const char* LAST_TEXT[NF]
cdef Py_ssize_t LAST_LENGTH[NF]
for _b in range(NF):
    LAST[_b] = NULL

cdef struct Cursor:
    const unsigned char* p
    const unsigned char* end


cdef inline void _ws(Cursor* c) noexcept:
    while c.p < c.end and c.p[0] <= 32 and (
        c.p[0] == 32 or c.p[0] == 10 or c.p[0] == 13 or c.p[0] == 9
    ):
        c.p += 1


cdef inline bint _next(Cursor* c, unsigned char b) noexcept:
    """Past white space, whether the next byte is ``b`` (then consumed)."""
    _ws(c)
    if c.p < c.end and c.p[0] == b:
        c.p += 1
        return True
    return False


cdef inline bint _word(Cursor* c, const char* word, Py_ssize_t n) noexcept:
    if c.end - c.p >= n and c.p[0] == word[0] and ingestor_same(c.p, word, n):
        c.p += n
        return True
    return False


cdef extern from "_plain.h":
    const unsigned char* ingestor_plain_end(
        const unsigned char* p, const unsigned char* end, int* high
    ) noexcept
    bint ingestor_same(const void* a, const void* b, size_t n) noexcept


cdef inline Span _span(Cursor* c, const unsigned char** text, Py_ssize_t* n) noexcept:
    """The bytes of a string whose opening quote is consumed, up to its closing quote."""
    cdef int high
    cdef const unsigned char* stop = ingestor_plain_end(c.p, c.end, &high)
    if stop == c.end or stop[0] != 34:
        return NOT_PLAIN
    text[0], n[0] = c.p, stop - c.p
    c.p = stop + 1
    return UTF8 if high else ASCII


cdef int _number(Cursor* c, long long* mantissa, int* places, bint* negative) noexcept:
    """A JSON number without exponent: 1 an integer, 2 with a fraction, 0 anything else."""
    cdef const unsigned char* p = c.p
    cdef long long m = 0
    cdef int digits = 0, frac = -1
    negative[0] = p < c.end and p[0] == 45
    if negative[0]:
        p += 1
    if p >= c.end or not 48 <= p[0] <= 57:
        return 0
    if p[0] == 48:  # a leading zero is the whole integer part
        p += 1
        digits = 1
    else:
        while p < c.end and 48 <= p[0] <= 57 and digits < 18:
            m = m * 10 + (p[0] - 48)
            digits += 1
            p += 1
    if p < c.end and p[0] == 46:
        p += 1
        frac = 0
        while p < c.end and 48 <= p[0] <= 57 and digits < 18:
            m = m * 10 + (p[0] - 48)
            digits += 1
            frac += 1
            p += 1
        if frac == 0:
            return 0
    if p < c.end and (48 <= p[0] <= 57 or p[0] == 101 or p[0] == 69 or p[0] == 46):
        return 0  # more digits than taken, an exponent, a second point
    c.p = p
    mantissa[0] = m
    places[0] = frac
    return 2 if frac >= 0 else 1


cdef object _text(Span span, const unsigned char* text, Py_ssize_t n, Py_ssize_t field):
    """The str of a plain string's bytes (None: not valid UTF-8), the field's last when equal."""
    cdef PyObject* last = LAST[field]
    if span == UTF8:
        try:
            return PyUnicode_DecodeUTF8(<const char*>text, n, NULL)
        except UnicodeDecodeError:
            return None
    if last != NULL and LAST_LENGTH[field] == n and ingestor_same(LAST_TEXT[field], text, n):
        return <object>last
    value = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(value), text, n)
    Py_INCREF(value)
    Py_XDECREF(last)
    LAST[field] = <PyObject*>value
    LAST_TEXT[field] = <const char*>PyUnicode_DATA(value)
    LAST_LENGTH[field] = n
    return value


cdef object _value(Cursor* c, Py_ssize_t field):
    """The value of a field (NULL_VALUE for null), or None when it is not one the scanner is
    sure of."""
    cdef const unsigned char* text
    cdef Py_ssize_t n
    cdef long long m
    cdef int places, number
    cdef bint negative
    cdef Span span
    cdef int shape = SHAPES[field]
    cdef unsigned char first
    _ws(c)
    if c.p >= c.end:
        return None
    first = c.p[0]
    if first == 110:  # n
        return NULL_VALUE if _word(c, b"null", 4) else None
    if shape == TEXT:
        if first != 34:
            return None
        c.p += 1
        span = _span(c, &text, &n)
        return None if span == NOT_PLAIN else _text(span, text, n, field)
    if shape == FLAG:
        if _word(c, b"true", 4):
            return True
        return False if _word(c, b"false", 5) else None
    number = _number(c, &m, &places, &negative)
    if number == 0:
        return None
    if shape == WHOLE:
        return PyLong_FromLongLong(-m if negative else m) if number == 1 else None
    if m > EXACT_BELOW:
        return None
    if number == 1:  # an integer: msgspec makes it a float, -0 as 0.0
        return PyFloat_FromDouble(<double>(-m if negative else m))
    # Correctly rounded, as msgspec's: m < 2**53 and 10**places are exact, and one IEEE
    # division of two exact doubles rounds once (Clinger's fast path).
    return PyFloat_FromDouble(-(m / POW10[places]) if negative else m / POW10[places])


cdef bint _skip(Cursor* c) noexcept:
    """Past the value of a key the scanner does not know, when it is a plain scalar."""
    cdef const unsigned char* text
    cdef Py_ssize_t n
    cdef long long m
    cdef int places
    cdef bint negative
    _ws(c)
    if c.p >= c.end:
        return False
    if c.p[0] == 34:
        c.p += 1
        return _span(c, &text, &n) == ASCII
    if _word(c, b"null", 4) or _word(c, b"true", 4) or _word(c, b"false", 5):
        return True
    return _number(c, &m, &places, &negative) != 0


cdef Py_ssize_t _field(const unsigned char* key, Py_ssize_t n, Py_ssize_t expected) noexcept:
    """The index of a key in FIELDS (-1: not a field), trying the one after the last first."""
    cdef Py_ssize_t i, at
    for i in range(NF):  # from the expected one on: a field not sent skips one or two
        at = expected + i
        at = at - NF if at >= NF else at
        if KEY_LENGTHS[at] == n and ingestor_same(KEYS[at], key, n):
            return at
    return -1


cdef bint _key(Cursor* c, const unsigned char** key, Py_ssize_t* n) noexcept:
    """A plain ASCII key and its colon."""
    return _next(c, 34) and _span(c, key, n) == ASCII and _next(c, 58)


cdef int _odd(Cursor* c, PyObject** v) except -1:
    """One odd object into ``v`` (owned references, NULL where not sent); 0: not sure."""
    cdef const unsigned char* key
    cdef Py_ssize_t n, field, expected = 0
    cdef unsigned int seen = 0
    if not _next(c, 123):
        return 0
    if _next(c, 125):
        return 1
    while True:
        if not _next(c, 34):
            return 0
        n = KEY_LENGTHS[expected] if expected < NF else 0
        if n and c.end - c.p > n and c.p[n] == 34 and ingestor_same(c.p, KEYS[expected], n):
            field = expected  # the key the vendor sends next: no scan of it
            c.p += n + 1
            if not _next(c, 58):
                return 0
        elif _span(c, &key, &n) == ASCII and _next(c, 58):
            field = _field(key, n, expected)
        else:
            return 0
        if field < 0:
            if not _skip(c):
                return 0
        else:
            if seen & (<unsigned int>1 << field):
                return 0  # a duplicate: msgspec keeps the last
            seen |= <unsigned int>1 << field
            expected = field + 1
            value = _value(c, field)
            if value is None:
                return 0
            if value is not NULL_VALUE:
                Py_INCREF(value)
                v[field] = <PyObject*>value
        if _next(c, 125):
            return 1
        if not _next(c, 44):
            return 0


cdef int _odds(Cursor* c, _Event ev) except -1:
    """The "data" array, a row per odd; 0: not sure, or an odd the careful path must judge."""
    cdef PyObject* v[NF]
    cdef Py_ssize_t i
    cdef int ok
    if not _next(c, 91) or _next(c, 93):  # no odds: msgspec's path refuses the event
        return 0
    while True:
        for i in range(NF):
            v[i] = NULL
        try:
            ok = _odd(c, v) and _row(v, ev)
        finally:
            for i in range(NF):
                Py_XDECREF(v[i])
        if not ok:
            return 0
        if _next(c, 93):
            return 1
        if not _next(c, 44):
            return 0


cdef object _scan(
    bytes data,
    str group_key,
    str stream,
    str event_type,
    object kind,
    str event_id,
    object received_at,
):
    """The event's rows as ``fast_odds`` gives them, or None when the scanner is not sure."""
    cdef Cursor c
    cdef const unsigned char* key
    cdef const unsigned char* text
    cdef Py_ssize_t n
    cdef Span span
    cdef object event = None
    cdef list odds = None
    cdef bint entry_seen = False
    c.p = <const unsigned char*>PyBytes_AS_STRING(data)
    c.end = c.p + PyBytes_GET_SIZE(data)
    if not _next(&c, 123):
        return None
    while True:
        if not _key(&c, &key, &n):
            return None
        if n == 8 and ingestor_same(key, b"entry_id", 8):
            if entry_seen:
                return None
            entry_seen = True
            _ws(&c)
            if _word(&c, b"null", 4):
                entry_id = event_id
            elif _next(&c, 34) and _span(&c, &text, &n) == ASCII:
                entry_id = PyUnicode_FromStringAndSize(<const char*>text, n) or event_id
            else:
                return None
            entry = _parsed(entry_id)
            if entry is None or _future(entry):
                return None
            odds = []
            event = _event(group_key, event_type, entry_id, event_id, received_at, entry, odds)
        elif n == 4 and ingestor_same(key, b"data", 4):
            if event is None or odds:  # no entry yet, or a second "data"
                return None
            if not _odds(&c, _shared(odds, entry_id, event_id, kind, stream, entry)):
                return None
        elif not _skip(&c):
            return None
        if _next(&c, 125):
            break
        if not _next(&c, 44):
            return None
    _ws(&c)
    return event if c.p == c.end and event is not None and odds else None


def scanned(bytes data, str event_id="1-0"):
    """Whether the scanner takes the event's text (for tests: what it leaves goes to msgspec)."""
    from datetime import datetime

    when = datetime(2026, 1, 1, tzinfo=UTC_)
    return _scan(data, "g", "copilot", "copilot-odds", Kind.ODDS, event_id, when) is not None
