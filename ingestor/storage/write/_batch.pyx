# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``batch.pure_collapse``: the same records and fixture stubs, built with
the rows' fields read in C (``_rows.pxd``). Read batch.py first: this file only makes it fast;
tests/unit/test_twins.py holds the two equal on generated batches.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject

from ingestor.domain._rows cimport OddRow

from ingestor.domain.events import Kind
from ingestor.storage.write.history import ODD_KEYS, odd_key

cdef object SETTLED = Kind.SETTLED
cdef object KEYS = ODD_KEYS  # a dict subclass (bounded): read with the C API, filled by odd_key


@cython.no_gc  # it holds rows only: no cycle runs through it
cdef class _Current:
    cdef OddRow latest
    cdef OddRow priced
    cdef OddRow settled


cdef inline object _key(object uid):
    cdef PyObject* found = PyDict_GetItem(KEYS, uid)
    if found != NULL and <object>found:
        return <object>found
    return odd_key(uid)


cdef tuple _record(_Current cur):
    cdef OddRow r = cur.latest
    cdef OddRow p = cur.priced
    cdef OddRow s = cur.settled
    cdef bint priced = p is not None
    cdef bint settled = s is not None
    return (
        r.id,
        r.odd_id,
        r.stream,
        r.sportsbook,
        r.fixture_id,
        r.game_id,
        r.sport,
        r.league,
        r.market,
        r.name,
        r.selection,
        r.player_id,
        r.team_id,
        r.version_id,
        p.points if priced else None,
        p.price if priced else None,
        p.is_main if priced else None,
        p.is_live if priced else None,
        p.grouping_key if priced else None,
        p.selection_line if priced else None,
        s.settlement if settled else None,
        s.settled_at if settled else None,
        r.kind.status,
        r.source_ts,
        r.entry_id,
        r.order_key,
        p.order_key if priced else None,
        s.order_key if settled else None,
        _key(r.id),
    )


def collapse(list events):
    """One current-state record per odd of ``events``, and the fixture of every odd."""
    cdef dict current = {}
    cdef dict stubs = {}
    cdef list records = []
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
    for value in current.values():
        cur = <_Current>value
        records.append(_record(cur))
        r = cur.priced if cur.priced is not None else (
            cur.settled if cur.settled is not None else cur.latest
        )
        if r.fixture_id is not None and r.fixture_id not in stubs:
            stubs[r.fixture_id] = FixtureStub(
                r.fixture_id, r.game_id, r.sport, r.league, r.source_ts, r.entry_id or "", r.stream
            )
    return records, stubs


from ingestor.storage.write.batch import FixtureStub  # batch imports this module last
