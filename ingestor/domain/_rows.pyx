# cython: language_level=3
"""The compiled twin of ``events.OddRow`` (a slots dataclass there): the same constructor, the
same fields, equality and repr; its fields are C struct members that the write path's twins
(``storage/write/_batch.pyx``, ``_history.pyx``) read without a lookup. A property test holds
the two alike (tests/unit/test_twins.py).
"""

FIELDS = ('id', 'kind', 'stream', 'odd_id', 'sportsbook', 'fixture_id', 'game_id', 'sport', 'league', 'market', 'name', 'selection', 'selection_line', 'player_id', 'team_id', 'version_id', 'points', 'price', 'is_main', 'is_live', 'grouping_key', 'settlement', 'settled_at', 'source_ts', 'entry_id', 'event_id', 'order_key', 'carries_price')


cimport cython


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

cdef extern from "_md5.h":
    long long ingestor_md5_key(const char* text, size_t n)


# Outside the cyclic GC: a row's fields are strings, numbers, datetimes, bytes and a Kind, which
# never refer back to a row, so no cycle can run through it; tracked, the rows a full queue
# holds (up to a million) made every collection walk them all.
@cython.no_gc
cdef class OddRow:
    """One odd as carried by one odds, locked or settled event."""

    def __init__(
        self,
        id,
        kind,
        stream,
        odd_id,
        sportsbook,
        fixture_id,
        game_id,
        sport,
        league,
        market,
        name,
        selection,
        selection_line,
        player_id,
        team_id,
        version_id,
        points,
        price,
        is_main,
        is_live,
        grouping_key,
        settlement,
        settled_at,
        source_ts,
        entry_id,
        event_id,
        order_key,
        carries_price=True,
    ):
        self.id = id
        self.kind = kind
        self.stream = stream
        self.odd_id = odd_id
        self.sportsbook = sportsbook
        self.fixture_id = fixture_id
        self.game_id = game_id
        self.sport = sport
        self.league = league
        self.market = market
        self.name = name
        self.selection = selection
        self.selection_line = selection_line
        self.player_id = player_id
        self.team_id = team_id
        self.version_id = version_id
        self.points = points
        self.price = price
        self.is_main = is_main
        self.is_live = is_live
        self.grouping_key = grouping_key
        self.settlement = settlement
        self.settled_at = settled_at
        self.source_ts = source_ts
        self.entry_id = entry_id
        self.event_id = event_id
        self.order_key = order_key
        self.carries_price = carries_price

    cdef long long key(self) except? -1:
        """``history.odd_key(self.id)``, in C (``_md5.h``), once per row: the history row
        and the current-state row of an odd both need it, and each computed it (md5 and a
        read of the id, out of the cache by then: 2.5% of the daemon's CPU for the second)."""
        cdef Py_ssize_t n
        cdef const char* text
        if self._key_id is not self.id:
            text = PyUnicode_AsUTF8AndSize(self.id, &n)
            self._key = ingestor_md5_key(text, <size_t>n)
            self._key_id = self.id
        return self._key

    def _values(self):
        return (self.id, self.kind, self.stream, self.odd_id, self.sportsbook, self.fixture_id, self.game_id, self.sport, self.league, self.market, self.name, self.selection, self.selection_line, self.player_id, self.team_id, self.version_id, self.points, self.price, self.is_main, self.is_live, self.grouping_key, self.settlement, self.settled_at, self.source_ts, self.entry_id, self.event_id, self.order_key, self.carries_price)

    def __eq__(self, other):
        if type(other) is not OddRow:
            return NotImplemented
        return self._values() == other._values()

    def __ne__(self, other):
        if type(other) is not OddRow:
            return NotImplemented
        return self._values() != other._values()

    __hash__ = None

    def __repr__(self):
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(FIELDS, self._values()))
        return f"OddRow({shown})"


def md5_key(str uid):
    """``history.odd_key`` of ``uid``, as the compiled rows compute it (for the twin test)."""
    cdef Py_ssize_t n
    cdef const char* text = PyUnicode_AsUTF8AndSize(uid, &n)
    return ingestor_md5_key(text, <size_t>n)
