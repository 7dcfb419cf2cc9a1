# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twins of ``history.pure_records`` and ``history.pure_encode_into``: the same
records, marks and clock, with the rows' fields read in C (``_rows.pxd``), canonical entry ids
and UTC times converted in C (anything else goes to the Python functions). Read history.py
first: this file only makes it fast; tests/unit/test_twins.py holds the two equal.
"""

from cpython.datetime cimport PyDateTime_Check, PyDateTime_DATE_GET_TZINFO, import_datetime
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from libc.math cimport fabs, floor
from cpython.ref cimport PyObject

from ingestor.domain._rows cimport OddRow
from ingestor.domain._civil cimport wall_micros
from ingestor.storage.write._pgcopy cimport Buf, begin_tuple, discard, field, finish, int8, start

from ingestor.domain.events import Kind
from datetime import UTC

from ingestor.storage.write.history import (
    _MS_LIMIT,
    EXACT,
    FROM_REST_KIND,
    SEQ_BITS as _SEQ_BITS,
    STREAMED,
    _SEQ_MASK,
    _from_rest,
    entry_key,
    float4_exact,
    received_us,
)

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

import_datetime()
cdef unsigned long long MS_LIMIT = _MS_LIMIT
cdef unsigned long long SEQ_MASK = _SEQ_MASK
cdef int SEQ_BITS = _SEQ_BITS

cdef object EXACTS = EXACT
# The COPY bytes of one odds_changes row: 66 on the bench (8 fields), a little above.
cdef Py_ssize_t ROW_BYTES = 72
cdef object LOCKED = Kind.LOCKED


cdef inline bint _exact(object value) except -1:
    """``float4_exact``. Quarters below 2**20 (American prices, points) answer in C: float4
    holds them exactly, and any shorter text than theirs is at least a quarter away, beyond
    half of float4's spacing there, so their shortest float4 text reads back as them. The
    dict lookup it replaces missed the cache on most odds: 1.6% of the daemon's CPU."""
    cdef double d, q
    if value is None:
        return True
    if PyFloat_CheckExact(value):
        d = PyFloat_AS_DOUBLE(value)
        q = d * 4.0
        if fabs(d) < 1048576.0 and q == floor(q):
            return True
    cdef PyObject* found = PyDict_GetItem(EXACTS, value)
    if found != NULL:
        return bool(<object>found)
    return float4_exact(value)


def records(list odds, object event, object settlements, object staged, list rows,
            list unsettled):
    """Append the odds_changes records of one event's odds to ``rows``."""
    cdef OddRow r
    cdef int main
    cdef long long kind, head = 0
    cdef object exact, code, record, held
    cdef bint from_rest_lock
    # The event's part of ``ev`` in C while it fits (until 2091): Python's arithmetic per odd
    # made two numbers for each.
    cdef bint fits = 0 <= event < (1 << 58)
    if fits:
        head = <long long>event << 4
    for r in odds:
        exact = None if _exact(r.price) and _exact(r.points) else [r.price, r.points]
        code = None
        if r.settlement is not None:
            code = settlements.get(r.settlement)
        kind = r.kind
        main = 0 if r.is_main is None else (2 if r.is_main else 1)
        record = (
            r.key(),
            r.source_ts,
            head | (kind << 2) | main if fits else (event << 4) | (kind << 2) | main,
            r.price,
            r.points,
            code,
            r.settled_at,
            exact,
        )
        if staged is not None:
            held = (
                r.order_key[:-1] + b"\x00" if staged[2] == 3 and r.kind == LOCKED else None
            )
            record = (*record, *staged, kind, held)
        if r.settlement is not None and code is None:
            record = list(record)
            unsettled.append((record, r.settlement))
        rows.append(record)


def changes_payload(h, str codes):
    """``history.pure_changes_payload``: the COPY stream of the rows that go straight in,
    written from the rows' fields, with no record between."""
    cdef Buf b
    cdef bytes code_bytes = codes.encode("ascii")
    cdef const char* c = code_bytes
    cdef dict settled = h.codes
    cdef OddRow r
    cdef list odds
    cdef long long head, kind
    cdef int main
    cdef bint fits
    cdef object event, code
    if len(codes) != 8:
        raise TypeError(f"binary COPY: 8 odds_changes columns, {len(codes)} types")
    if c[0] != b"q" or c[2] != b"q":
        raise TypeError("binary COPY: odd_key and ev are bigint columns")
    start(&b, ROW_BYTES * sum([len(<list>pair[1]) for pair in h.changes]))
    try:
        for event, odds in h.changes:
            fits = 0 <= event < (1 << 58)  # ev in C while it fits (until 2091)
            head = <long long>event << 4 if fits else 0
            for r in odds:
                begin_tuple(&b, 8)
                int8(&b, r.key())
                field(&b, c[1], r.source_ts)
                kind = r.kind
                main = 0 if r.is_main is None else (2 if r.is_main else 1)
                if fits:
                    int8(&b, head | (kind << 2) | main)
                else:
                    field(&b, c[2], (event << 4) | (kind << 2) | main)
                field(&b, c[3], r.price)
                field(&b, c[4], r.points)
                code = None if r.settlement is None else settled[r.settlement]
                field(&b, c[5], code)
                field(&b, c[6], r.settled_at)
                if _exact(r.price) and _exact(r.points):
                    field(&b, c[7], None)
                else:
                    field(&b, c[7], [r.price, r.points])
    except BaseException:
        discard(&b)
        raise
    return finish(&b)


cdef object _fast_entry_key(str entry_id):
    """``entry_key`` of a canonical ``<ms>-<seq>`` within range, in C; None for anything else
    (the Python function then judges it, as it always did)."""
    cdef Py_ssize_t n, i
    if not entry_id.isascii():  # (a lone surrogate has no UTF-8 form to scan)
        return None
    cdef const char* s = PyUnicode_AsUTF8AndSize(entry_id, &n)
    cdef unsigned long long ms = 0, seq = 0
    cdef Py_ssize_t dash = -1
    if n < 3 or n > 30:
        return None
    for i in range(n):
        if s[i] == b"-":
            if dash >= 0:
                return None
            dash = i
        elif s[i] < b"0" or s[i] > b"9":
            return None
    if dash <= 0 or dash == n - 1:
        return None
    if (s[0] == b"0" and dash > 1) or (s[dash + 1] == b"0" and n - dash - 1 > 1):
        return None  # a leading zero: not canonical
    if dash > 14 or n - dash - 1 > 8:
        return None  # past the limits below for sure
    for i in range(dash):
        ms = ms * 10 + <unsigned long long>(s[i] - 48)
    for i in range(dash + 1, n):
        seq = seq * 10 + <unsigned long long>(s[i] - 48)
    if ms >= MS_LIMIT or seq > SEQ_MASK:
        return None
    return <long long>((ms << SEQ_BITS) | seq)


cdef object _entry_key(str entry_id):
    key = _fast_entry_key(entry_id)
    if key is None:
        return entry_key(entry_id)
    return (key, None)


cdef long long _received_us(object at) except? -1:
    """``received_us`` in C for a UTC datetime (every one the daemon makes)."""
    if not PyDateTime_Check(at) or <object>PyDateTime_DATE_GET_TZINFO(at) is not UTC:
        return received_us(at)
    return wall_micros(at, 18262)  # from 2020-01-01


cdef bint _twin(object from_rest, object now, object newest, list odds) except -1:
    """history._twin_possible: ``in`` and ``[]`` on the read-only view run in C, where a
    ``get`` per odd was a method call (0.4 µs per odd while snapshot rows are remembered).
    A row newer than ``newest`` is skipped, timed once per run of rows sharing a time."""
    cdef OddRow r
    cdef tuple rest
    cdef object last = None
    cdef bint newer = False, first = True
    for r in odds:
        if newest is not None:
            if first or r.source_ts is not last:
                first, last = False, r.source_ts
                newer = last > newest
            if newer:
                continue
        if r.id in from_rest:
            rest = from_rest[r.id]
            if rest[0] > now and r.source_ts <= rest[1]:
                return True
    return False


def encode_into(ctx, list events, bint check_all, out):
    """The events' records, marks and clock into ``out`` (history.pure_encode_into)."""
    cdef set seen = set()
    cdef dict marks = out.marks
    cdef object numbers = ctx.group_numbers, old_marks = ctx.marks, checked_groups = ctx.checked
    cdef object settlements = ctx.settlements, unsettled = out.unsettled
    cdef object from_rest = ctx.from_rest, now = ctx.now, newest = ctx.rest_newest
    cdef bint twins = bool(from_rest)
    cdef long long slot = ctx.slot, last_us = out.last_us, us
    cdef list events_out = out.events, checked_events = out.checked_events
    cdef list changes = out.changes, checked_changes = out.checked_changes
    cdef set texts = out.texts
    cdef Py_ssize_t change_rows = out.change_rows
    cdef OddRow r
    cdef bint checked
    for e in events:
        odds = e.odds
        if not odds:
            continue
        if e.event_id in FROM_REST_KIND:
            out.last_us = last_us  # _from_rest moves the clock too
            _from_rest(ctx, e, out)
            last_us = out.last_us
            continue
        group = numbers[e.group_key]
        entry_id = e.entry_id
        key, text = _entry_key(entry_id)
        kind = odds[0].kind
        mark = marks.get(group, old_marks.get(group, -1))
        seen_key = (group, key, entry_id, kind)
        repeat = seen_key in seen
        seen.add(seen_key)
        checked = (
            check_all
            or repeat
            or text is not None
            or key <= mark
            or group in checked_groups
            or (twins and _twin(from_rest, now, newest, odds))
        )
        if text is None and key > mark:
            marks[group] = key
        event_sse = e.event_id
        if event_sse == entry_id:
            sse_key, sse_text = key, text
        elif event_sse:
            sse_key, sse_text = _entry_key(event_sse)
        else:
            sse_key, sse_text = None, ""
        us = _received_us(e.received_at)
        last_us = us if us > last_us + 1 else last_us + 1
        event = (last_us << 8) | (slot << 4)
        record = (
            event,
            key,
            sse_key if sse_text is None else None,
            group,
            int(kind),
            text,
            sse_text,
        )
        if checked:
            checked_events.append(record)
            records(odds, event, settlements, (key, text, STREAMED), checked_changes, unsettled)
        else:
            events_out.append(record)
            changes.append((event, odds))
            change_rows += len(odds)
            for r in odds:
                if r.settlement is not None:
                    texts.add(r.settlement)
    out.last_us = last_us
    out.change_rows = change_rows
