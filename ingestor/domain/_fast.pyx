# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``fast.pure_rows``: the same rows, each built as the compiled OddRow
(``_rows.pyx``) with its fields set in C instead of through a 28-argument call. Read fast.py
first: this file only makes it fast; tests/unit/test_twins.py holds the two equal.
"""

from libc.math cimport fabs, rint

from ingestor.domain._rows cimport OddRow

from datetime import UTC, datetime

from ingestor.domain.events import Kind, order_key
from ingestor.domain.fast import _MAX_MICROS, _settled_at

cdef object SETTLED = Kind.SETTLED
cdef object MAX_MICROS = _MAX_MICROS
cdef object fromtimestamp = datetime.fromtimestamp


cdef long long _LIMIT = MAX_MICROS


cdef inline tuple _made(dict times, object micros, tuple entry, object kind):
    """The datetime and order key of a timestamp, made once per event."""
    made = times.get(micros)
    if made is None:
        made = times[micros] = (
            fromtimestamp(micros / 1_000_000, UTC),
            order_key(micros, entry, kind),
        )
    return made


def rows(list odds, object event, object kind, str stream, tuple entry):
    """Append a row per odd to ``event.odds``; False when the careful path must judge one."""
    cdef bint settled = kind is SETTLED
    cdef object entry_id = event.entry_id
    cdef object event_id = event.event_id
    cdef list out = event.odds
    cdef dict times = {}
    cdef object micros, ts, made = None, settled_at
    cdef OddRow row
    cdef object carries = not settled
    cdef double scaled
    cdef long long last = -1, us
    for o in odds:
        uid = o.id
        if not uid:
            return False
        ts = o.timestamp
        if type(ts) is float and fabs(<double>ts) < 9.0e9:  # µs below 2**53: exact in C
            # rint rounds half to even, as round() does; the rest goes through round().
            scaled = <double>ts * 1000000.0
            us = <long long>rint(scaled)
            if not 0 <= us < _LIMIT:
                return False
            if us != last:  # odds of an event mostly share their timestamp
                last = us
                made = _made(times, us, entry, kind)
        else:
            micros = entry[0] * 1000 if ts is None else round(ts * 1_000_000)
            if not 0 <= micros < MAX_MICROS:
                return False
            last = -1
            made = _made(times, micros, entry, kind)
        if settled:
            settled_at = _settled_at(o.settled_at)
            if settled_at is False:
                return False
        else:
            settled_at = None
        row = OddRow.__new__(OddRow)
        row.id = uid
        row.kind = kind
        row.stream = stream
        row.odd_id = o.odd_id
        row.sportsbook = o.sportsbook or None
        row.fixture_id = o.fixture_id
        row.game_id = o.game_id
        row.sport = o.sport
        row.league = o.league
        row.market = o.market
        row.name = o.name
        row.selection = o.selection
        row.selection_line = o.selection_line
        row.player_id = o.player_id or None
        row.team_id = o.team_id or None
        row.version_id = o.version_id
        row.points = o.points
        row.price = o.price
        row.is_main = o.is_main
        row.is_live = o.is_live
        row.grouping_key = o.grouping_key
        row.settlement = o.settlement if settled else None
        row.settled_at = settled_at
        row.source_ts = (<tuple>made)[0]
        row.entry_id = entry_id
        row.event_id = event_id
        row.order_key = (<tuple>made)[1]
        row.carries_price = carries
        out.append(row)
    return True
