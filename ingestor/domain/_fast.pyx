# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``fast.pure_fast_odds`` (and of ``fast.pure_rows``): the same event, its
NUL check, entry id, times and order keys done in C, and each row built as the compiled OddRow
(``_rows.pyx``) with its fields set in C instead of through a 28-argument call. Read fast.py
first: this file only makes it fast; tests/unit/test_twins.py holds the two equal.

Measured on the bench's events (µs per event, on a slow machine): the NUL search 2.2 -> memchr,
the entry id 2.3 (``parse_entry_id`` in Python), the datetime and order key of a timestamp 2.4
(``fromtimestamp`` and ``struct.pack``); msgspec's decode, 9.3, stays what it is.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport datetime_new, import_datetime
from cpython.ref cimport PyObject
from libc.math cimport fabs, rint
from libc.string cimport memchr, memcmp

from ingestor.domain._civil cimport civil_from_days
from ingestor.domain._rows cimport OddRow

import time
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
cdef double FUTURE_MS = MAX_FUTURE_MS


# Where each field of a decoded odd lives in the struct (msgspec's fields are slots: member
# descriptors). Read there, a field costs a load; through getattr, 22 per odd were 3% of the
# daemon's CPU. Any other layout (a msgspec that changed it) reads through getattr as before.
FIELDS = _Odd.__struct_fields__
cdef Py_ssize_t OFFSETS[32]
cdef object ODD = _Odd


cdef bint _offsets() except -1:
    cdef PyMemberDescrObject* member
    if len(FIELDS) > 32:
        return False
    for i, name in enumerate(FIELDS):
        descr = ODD.__dict__.get(name)
        if type(descr) is not MemberDescriptorType:
            return False
        member = <PyMemberDescrObject*>descr
        if member.d_member.type != T_OBJECT_EX and member.d_member.type != T_OBJECT:
            return False
        OFFSETS[i] = member.d_member.offset
    return True


cdef bint BY_OFFSET = _offsets()
READS_SLOTS = BY_OFFSET  # for the twin test: the fast reads are on
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


cdef inline object _get(object o, bint direct, Py_ssize_t field):
    """Field ``field`` of a decoded odd: from its slot when ``direct``, else by name."""
    cdef PyObject* value
    if direct:
        value = (<PyObject**>((<char*><PyObject*>o) + OFFSETS[field]))[0]
        if value != NULL:
            return <object>value
    return getattr(o, FIELDS[field])


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


cdef object _utc(long long micros):
    """``fast.utc_micros`` (0 <= micros < year 10000): the datetime made from its fields."""
    cdef long long days = micros // 86_400_000_000
    cdef long long rest = micros - days * 86_400_000_000
    cdef int y, m, d
    civil_from_days(days, &y, &m, &d)
    return datetime_new(
        y,
        m,
        d,
        <int>(rest // 3_600_000_000),
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
    try:
        payload = DECODE(data)
    except DECODE_ERRORS:
        return None
    entry_id = payload.entry_id or event_id
    entry = _parsed(entry_id)
    if entry is None or entry[0] > now() * 1000 + FUTURE_MS or not payload.data:
        return None
    # Every field given, in order: the dataclass's keyword and its default factories (a call
    # of list() each) cost 106 instructions per odd (callgrind, the worker's path: 20,674 ->
    # 20,568).
    event = DecodedEvent(
        group_key, event_type, entry_id, event_id, received_at, [], [], True, [], [], 0, entry
    )
    return event if _fill(payload.data, event, kind, stream, entry) else None


def rows(list odds, object event, object kind, str stream, tuple entry):
    """Append a row per odd to ``event.odds``; False when the careful path must judge one."""
    return _fill(odds, event, kind, stream, entry)


cdef bint _fill(list odds, object event, object kind, str stream, tuple entry) except -1:
    cdef bint settled = kind is SETTLED
    cdef int rank = kind
    cdef long long ems = entry[0], eseq = entry[1]
    cdef object entry_id = event.entry_id
    cdef object event_id = event.event_id
    cdef list out = event.odds
    cdef dict times = {}
    cdef object micros, ts, settled_at
    cdef tuple made = None
    cdef OddRow row
    cdef object carries = not settled
    cdef long long last = -1, us
    cdef bint direct
    for o in odds:
        direct = BY_OFFSET and type(o) is ODD
        uid = _get(o, direct, ID)
        if not uid:
            return False
        ts = _get(o, direct, TIMESTAMP)
        if type(ts) is float and fabs(<double>ts) < 9.0e9:  # µs below 2**53: exact in C
            # rint rounds half to even, as round() does; the rest goes through round().
            us = <long long>rint(<double>ts * 1000000.0)
        else:
            micros = entry[0] * 1000 if ts is None else round(ts * 1_000_000)
            if not 0 <= micros < _LIMIT:
                return False
            us = micros
        if not 0 <= us < _LIMIT:
            return False
        if us != last:  # odds of an event mostly share their timestamp
            last = us
            made = _made(times, us, ems, eseq, rank)
        if settled:
            settled_at = _settled_at(_get(o, direct, SETTLED_AT))
            if settled_at is False:
                return False
        else:
            settled_at = None
        row = OddRow.__new__(OddRow)
        row.id = uid
        row.kind = kind
        row.stream = stream
        row.odd_id = _get(o, direct, ODD_ID)
        row.sportsbook = _get(o, direct, SPORTSBOOK) or None
        row.fixture_id = _get(o, direct, FIXTURE)
        row.game_id = _get(o, direct, GAME)
        row.sport = _get(o, direct, SPORT)
        row.league = _get(o, direct, LEAGUE)
        row.market = _get(o, direct, MARKET)
        row.name = _get(o, direct, NAME)
        row.selection = _get(o, direct, SELECTION)
        row.selection_line = _get(o, direct, LINE)
        row.player_id = _get(o, direct, PLAYER) or None
        row.team_id = _get(o, direct, TEAM) or None
        row.version_id = _get(o, direct, VERSION)
        row.points = _get(o, direct, POINTS)
        row.price = _get(o, direct, PRICE)
        row.is_main = _get(o, direct, MAIN)
        row.is_live = _get(o, direct, LIVE)
        row.grouping_key = _get(o, direct, GROUPING)
        row.settlement = _get(o, direct, SETTLEMENT) if settled else None
        row.settled_at = settled_at
        row.source_ts = made[0]
        row.entry_id = entry_id
        row.event_id = event_id
        row.order_key = made[1]
        row.carries_price = carries
        out.append(row)
    return True
