# The compiled twin of events.OddRow, declared for the write path's twins to read its fields
# in C (cimport). Every field is a Python object, as in the dataclass: same values, same rules.
cdef class OddRow:
    cdef public object id, kind, stream, odd_id, sportsbook, fixture_id, game_id, sport
    cdef public object league, market, name, selection, selection_line, player_id, team_id
    cdef public object version_id, points, price, is_main, is_live, grouping_key, settlement
    cdef public object settled_at, source_ts, entry_id, event_id, order_key, carries_price
    # The odd key (history.odd_key: md5 of the id), computed once for both rows a flush
    # writes of this odd (history and current state); valid while ``id`` is ``_key_id``.
    cdef long long _key
    cdef object _key_id
    cdef long long key(self) except? -1
