# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twins of ``batch.pure_collapse`` and ``batch.pure_current_payload``: the same
newest states, fixture stubs and COPY bytes, with the rows' fields read in C (``_rows.pxd``).
Read batch.py first: this file only makes it fast; tests/unit/test_twins.py holds the two
equal on generated batches.
"""

cimport cython
from cpython.datetime cimport PyDateTime_Check, PyDateTime_DATE_GET_TZINFO, import_datetime
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM

from ingestor.storage.write._pgcopy cimport (
    Buf,
    begin_tuple,
    discard,
    field,
    finish,
    int8,
    start,
)

from ingestor.domain._civil cimport wall_micros
from ingestor.domain._rows cimport OddRow

from datetime import UTC

from ingestor.domain.events import _KIND_STATUS, Kind

cdef object SETTLED = Kind.SETTLED
import_datetime()
cdef tuple STATUS = _KIND_STATUS  # Kind.status by the kind's value (its property, per odd)
cdef Py_ssize_t COLUMNS = 29  # sql.ODDS_COLUMNS, in batch._current_record's order
# The COPY bytes of one current-state row, a little above the bench's mean (457): one
# allocation per flush, rarely grown.
cdef Py_ssize_t ROW_BYTES = 480


@cython.no_gc  # it holds rows only: no cycle runs through it
cdef class _Current:
    """batch._Current: the newest row of an odd, and its newest priced and settled rows."""
    cdef readonly OddRow latest
    cdef readonly OddRow priced
    cdef readonly OddRow settled


def current_payload(list currents, str codes):
    """``batch.pure_current_payload``: the COPY stream of the current-state rows, written from
    the rows' fields, with no record between (a 29-field tuple per odd, which touched every
    field twice more: when made and when freed)."""
    cdef Buf b
    cdef bytes code_bytes = codes.encode("ascii")
    cdef const char* c = code_bytes
    cdef _Current cur
    cdef OddRow r, p, s
    cdef int i
    cdef long long k
    if len(codes) != COLUMNS:
        raise TypeError(f"binary COPY: {COLUMNS} current-state columns, {len(codes)} types")
    start(&b, len(currents) * ROW_BYTES)
    try:
        for value in currents:
            cur = <_Current?>value
            r, p, s = cur.latest, cur.priced, cur.settled
            begin_tuple(&b, COLUMNS)
            field(&b, c[0], r.id)
            field(&b, c[1], r.odd_id)
            field(&b, c[2], r.stream)
            field(&b, c[3], r.sportsbook)
            field(&b, c[4], r.fixture_id)
            field(&b, c[5], r.game_id)
            field(&b, c[6], r.sport)
            field(&b, c[7], r.league)
            field(&b, c[8], r.market)
            field(&b, c[9], r.name)
            field(&b, c[10], r.selection)
            field(&b, c[11], r.player_id)
            field(&b, c[12], r.team_id)
            field(&b, c[13], r.version_id)
            if p is None:
                for i in range(14, 20):
                    field(&b, c[i], None)
            else:
                field(&b, c[14], p.points)
                field(&b, c[15], p.price)
                field(&b, c[16], p.is_main)
                field(&b, c[17], p.is_live)
                field(&b, c[18], p.grouping_key)
                field(&b, c[19], p.selection_line)
            field(&b, c[20], s.settlement if s is not None else None)
            field(&b, c[21], s.settled_at if s is not None else None)
            k = r.kind
            field(&b, c[22], <object>PyTuple_GET_ITEM(STATUS, k) if 0 <= k < 3 else r.kind.status)
            field(&b, c[23], r.source_ts)
            field(&b, c[24], r.entry_id)
            field(&b, c[25], r.order_key)
            field(&b, c[26], p.order_key if p is not None else None)
            field(&b, c[27], s.order_key if s is not None else None)
            if c[28] == b"q":  # a bigint, as in the schema: no Python int between
                int8(&b, r.key())
            else:
                field(&b, c[28], r.key())
    except BaseException:
        discard(&b)
        raise
    return finish(&b)


def collapse(list events):
    """``batch.pure_collapse``: the newest state of every odd of ``events``, and the fixture
    of every odd."""
    cdef dict current = {}
    cdef dict stubs = {}
    cdef OddRow r
    cdef _Current cur
    cdef PyObject* found
    for ev in events:
        for r in ev.odds:
            found = PyDict_GetItem(current, r.id)
            if found == NULL:
                cur = _Current.__new__(_Current)
                cur.latest = r
                current[r.id] = cur
            else:
                cur = <_Current>found
            if r.order_key >= cur.latest.order_key:
                cur.latest = r
            if r.kind is SETTLED and (
                cur.settled is None or r.order_key >= cur.settled.order_key
            ):
                cur.settled = r
            if r.carries_price and (cur.priced is None or r.order_key >= cur.priced.order_key):
                cur.priced = r
    newest = list(current.values())
    for value in newest:
        cur = <_Current>value
        r = cur.priced if cur.priced is not None else (
            cur.settled if cur.settled is not None else cur.latest
        )
        if r.fixture_id is not None and r.fixture_id not in stubs:
            stubs[r.fixture_id] = FixtureStub(
                r.fixture_id, r.game_id, r.sport, r.league, r.source_ts, r.entry_id or "", r.stream
            )
    return newest, stubs


cdef inline long long _utc_micros(object t) except? -1:
    """µs since 1970 of a datetime whose tzinfo is UTC itself (-1 for any other: Python then)."""
    if not PyDateTime_Check(t) or <object>PyDateTime_DATE_GET_TZINFO(t) is not UTC:
        return -1
    return wall_micros(t, 0)


cdef int _count_lag(
    object now, long long now_us, object t, Py_ssize_t n, tuple bounds, list counts, double* total
) except -1:
    cdef long long us = _utc_micros(t)
    cdef double lag
    cdef Py_ssize_t i, last = len(bounds) - 1
    if us < 0 or now_us < 0:
        lag = (now - t).total_seconds()
    else:
        lag = <double>(now_us - us) / 1e6  # as timedelta.total_seconds() rounds it
    i = 0
    while i < last and <double>bounds[i] < lag:  # bisect_left: the first bound >= lag
        i += 1
    counts[i] = counts[i] + n
    total[0] += lag * n
    return 0


def lag_counts(list events, object now, object bounds):
    """``batch.pure_lag_counts``. Odds of an event mostly share one datetime object (the
    decoder makes one per distinct time): a run of them is timed once, in C. A lag per odd
    (a list of every streamed odd, a Counter, a timedelta per distinct time) was 4% of the
    daemon's CPU."""
    cdef tuple edges = tuple(float(b) for b in bounds)
    cdef list counts = [0] * len(edges)
    cdef double total = 0.0
    cdef long long now_us = _utc_micros(now)
    cdef OddRow r
    cdef object run = None
    cdef Py_ssize_t n = 0
    for ev in events:
        for r in ev.odds:
            if r.source_ts is not run:
                if n:
                    _count_lag(now, now_us, run, n, edges, counts, &total)
                run, n = r.source_ts, 0
            n += 1
    if n:
        _count_lag(now, now_us, run, n, edges, counts, &total)
    return counts, total


from ingestor.storage.write.batch import FixtureStub  # batch imports this module last
