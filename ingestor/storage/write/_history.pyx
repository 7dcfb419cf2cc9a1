# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``history.pure_records``: the same odds_changes records, built with the
rows' fields read in C (``_rows.pxd``). Read history.py first: this file only makes it fast;
tests/unit/test_twins.py holds the two equal on generated events.
"""

from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject

from ingestor.domain._rows cimport OddRow

from ingestor.domain.events import Kind
from ingestor.storage.write.history import EXACT, ODD_KEYS, float4_exact, odd_key

cdef object KEYS = ODD_KEYS  # a dict subclass (bounded): read with the C API, filled by odd_key
cdef object EXACTS = EXACT
cdef object LOCKED = Kind.LOCKED


cdef inline object _key(object uid):
    cdef PyObject* found = PyDict_GetItem(KEYS, uid)
    if found != NULL and <object>found:
        return <object>found
    return odd_key(uid)


cdef inline bint _exact(object value) except -1:
    if value is None:
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
    cdef object kind, exact, code, record, held
    cdef bint from_rest_lock
    for r in odds:
        exact = None if _exact(r.price) and _exact(r.points) else [r.price, r.points]
        code = None
        if r.settlement is not None:
            code = settlements.get(r.settlement)
        kind = int(r.kind)
        main = 0 if r.is_main is None else (2 if r.is_main else 1)
        record = (
            _key(r.id),
            r.source_ts,
            (event << 4) | (kind << 2) | main,
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
