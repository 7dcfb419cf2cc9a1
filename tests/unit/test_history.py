"""The packed history's encoding and routing, pure: which rows may be copied straight in."""

from __future__ import annotations

from datetime import UTC, datetime

from ingestor.domain.events import DecodedEvent
from ingestor.domain.keys import entry_key, float4_exact, odd_key
from ingestor.storage.history import HistoryEncoder
from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import GROUP, event

WNBA = "copilot:basketball:WNBA"


def _encoder(**marks: int) -> HistoryEncoder:
    enc = HistoryEncoder({GROUP: 1, WNBA: 2}, {"Won": 1})
    enc.slot = 3
    enc.marks.update({1: marks.get("nba", -1), 2: marks.get("wnba", -1)})
    return enc


def test_new_entries_go_straight_in_and_raise_the_mark() -> None:
    enc = _encoder()
    h = enc.encode([event("copilot-odds", "5-0", [odd("a", ts=5), odd("b", ts=5)]),
                    event("copilot-odds", "6-1", [odd("a", ts=6)])])  # fmt: skip
    assert (len(h.changes), len(h.events), h.checked_changes) == (3, 2, [])
    assert h.marks == {1: entry_key("6-1")[0]} == {1: enc.marks[1]}
    assert {r[0] for r in h.changes} == {odd_key("a"), odd_key("b")}


def test_what_may_be_stored_already_is_checked() -> None:
    enc = _encoder(nba=entry_key("5-0")[0])
    h = enc.encode([
        event("copilot-odds", "5-0", [odd("a")]),  # at the mark: a replay
        event("copilot-odds", "7-0", [odd("a")]),  # new
        event("copilot-odds", "7-0", [odd("b")]),  # the same event again in the batch
        event("copilot-odds", "7-0", [odd("c")], group=WNBA),  # another group: its own entry
        event("copilot-odds", "007-0", [odd("d")]),  # an id that is not canonical
    ])  # fmt: skip
    checked = {r[0] for r in h.checked_changes}
    assert checked == {odd_key("a"), odd_key("b"), odd_key("d")}
    assert {r[0] for r in h.changes} == {odd_key("a"), odd_key("c")}
    assert enc.encode([event("copilot-odds", "8-0", [odd("e")])], check_all=True).changes == []
    enc.stale.add(2)
    assert enc.encode([event("copilot-odds", "9-0", [odd("f")], group=WNBA)]).changes == []


def test_snapshot_rows_are_checked_each_with_an_event_of_its_own() -> None:
    enc = _encoder()
    snap = event("copilot-odds", "1-0", [odd("a", ts=100), odd("b", ts=200)])
    rows = snap.odds
    rows[0].entry_id, rows[1].entry_id = "100000-0", "200000-0"
    h = enc.encode([DecodedEvent.snapshot(GROUP, snap.received_at, odds=rows)])
    assert not h.changes and len(h.checked_changes) == 2 and not h.marks
    assert [(e[1], e[4]) for e in h.checked_events] == [
        (entry_key("100000-0")[0], 3),
        (entry_key("200000-0")[0], 3),
    ]


def test_event_ids_are_unique_increasing_and_carry_the_slot() -> None:
    enc = _encoder()
    same_time = datetime(2026, 3, 1, tzinfo=UTC)
    evs = [event("copilot-odds", f"{i}-0", [odd("a", ts=i)]) for i in range(1, 50)]
    for e in evs:
        e.received_at = same_time
    ids = [e[0] for e in enc.encode(evs).events]
    assert ids == sorted(set(ids)) and all((i >> 4) & 15 == 3 for i in ids)
    evs2 = [event("copilot-odds", "60-0", [odd("a", ts=60)])]
    evs2[0].received_at = same_time
    assert enc.encode(evs2).events[0][0] > ids[-1]  # across batches too


def test_prices_keep_float4_unless_it_cannot_hold_them() -> None:
    assert all(float4_exact(v) for v in (-110.0, 150.0, 1.91, 2.375, 104.5, -7.25, 1234.567))
    assert not float4_exact(1 / 3)
    enc = _encoder()
    h = enc.encode([event("copilot-odds", "5-0", [odd("a", price=1 / 3), odd("b", price=1.91)])])
    exact = {r[0]: r[7] for r in h.changes}
    assert exact == {odd_key("a"): [1 / 3, None], odd_key("b"): None}


def test_a_settlement_text_without_a_code_is_left_for_the_flush() -> None:
    enc = _encoder()
    settled = [settled_odd("a", settlement="Won"), settled_odd("b", settlement="Void Leg")]
    h = enc.encode([event("copilot-settled-odds", "5-0", settled)])
    codes = {r[0]: r[5] for r in h.changes}
    assert codes[odd_key("a")] == 1 and codes[odd_key("b")] is None
    assert [(text, rec[0]) for rec, text in h.unsettled] == [("Void Leg", odd_key("b"))]


def test_a_group_handed_over_uncleanly_is_checked_for_a_while() -> None:
    enc = _encoder()
    enc.handed_over(GROUP, careful=False)
    assert enc.stale == {1} and not enc.careful  # the mark is read again, nothing more
    enc.stale.clear()
    assert enc.encode([event("copilot-odds", "5-0", [odd("a")])]).changes  # straight in
    enc.handed_over(GROUP, careful=True)
    enc.stale.clear()
    assert not enc.encode([event("copilot-odds", "6-0", [odd("a")])]).changes  # checked
    enc.careful[1] = 0.0  # the window is over
    assert enc.encode([event("copilot-odds", "7-0", [odd("a")])]).changes


def test_a_careful_window_ends_for_a_group_that_sends_nothing_more() -> None:
    # The giver never sees the group's events again: the window must still end, or every
    # later batch would be encoded inside its flush instead of ahead of it.
    enc = _encoder()
    enc.handed_over(GROUP, careful=True)
    assert enc.any_careful()
    enc.careful[1] = 0.0  # the deadline passed
    assert not enc.any_careful() and enc.careful == {}


def test_a_handover_while_the_marks_are_read_is_read_again() -> None:
    enc = _encoder()
    enc.handed_over(GROUP, careful=False)
    read_for = set(enc.stale)
    enc.handed_over(WNBA, careful=False)  # arrives during the read
    enc.adopt_marks([(1, 7)], read_for)
    assert enc.marks[1] == 7 and enc.stale == {2}
