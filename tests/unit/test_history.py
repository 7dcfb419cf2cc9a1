"""The packed history's encoding and routing, pure: which rows may be copied straight in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestor.domain.events import DecodedEvent
from ingestor.storage.write.history import (
    CHECKED_COLUMNS,
    HistoryBatch,
    change_records,
    encode,
    entry_key,
    float4_exact,
    odd_key,
)
from ingestor.storage.write.state import FROM_REST_S, HANDOVER_S, Known, WriteState
from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import GROUP, event

WNBA = "copilot:basketball:WNBA"


class Encoder:
    """The writer's use of the encoder: read the state's view, keep what encoding learnt."""

    def __init__(self, **marks: int) -> None:
        self.now = 0.0
        self.state = WriteState({GROUP: 1, WNBA: 2}, {}, clock=lambda: self.now)
        numbers = {GROUP: 1, WNBA: 2}
        known = Known([(1, marks.get("nba", -1)), (2, marks.get("wnba", -1))], {"Won": 1}, numbers)
        self.state.opened(3, known)

    def encode(self, events: list[DecodedEvent], *, check_all: bool = False) -> HistoryBatch:
        h = encode(self.state.history_context(), events, check_all=check_all)
        self.state.encoded(h.marks, h.last_us, h.from_rest)
        return h

    def mark(self, group: int) -> int:
        return self.state.history_context().marks[group]


def _encoder(**marks: int) -> Encoder:
    return Encoder(**marks)


def test_new_entries_go_straight_in_and_raise_the_mark() -> None:
    enc = _encoder()
    h = enc.encode(
        [
            event("copilot-odds", "5-0", [odd("a", ts=5), odd("b", ts=5)]),
            event("copilot-odds", "6-1", [odd("a", ts=6)]),
        ]
    )
    assert (h.change_rows, len(h.events), h.checked_changes) == (3, 2, [])
    assert h.marks == {1: entry_key("6-1")[0]} == {1: enc.mark(1)}
    assert {r[0] for r in change_records(h)} == {odd_key("a"), odd_key("b")}


def test_what_may_be_stored_already_is_checked() -> None:
    enc = _encoder(nba=entry_key("5-0")[0])
    h = enc.encode(
        [
            event("copilot-odds", "5-0", [odd("a")]),  # at the mark: a replay
            event("copilot-odds", "7-0", [odd("a")]),  # new
            event("copilot-odds", "7-0", [odd("b")]),  # the same event again in the batch
            event("copilot-odds", "7-0", [odd("c")], group=WNBA),  # another group: its own entry
            event("copilot-odds", "007-0", [odd("d")]),  # an id that is not canonical
        ]
    )
    checked = {r[0] for r in h.checked_changes}
    assert checked == {odd_key("a"), odd_key("b"), odd_key("d")}
    assert {r[0] for r in change_records(h)} == {odd_key("a"), odd_key("c")}
    assert enc.encode([event("copilot-odds", "8-0", [odd("e")])], check_all=True).changes == []
    enc.state.handed_over(WNBA, careful=False)  # taken over: its mark is read again
    assert enc.encode([event("copilot-odds", "9-0", [odd("f")], group=WNBA)]).changes == []


def test_rows_made_from_rest_are_checked_each_with_an_event_of_its_own_and_no_entry_id() -> None:
    enc = _encoder()
    snap = event("copilot-odds", "1-0", [odd("a", ts=100), odd("b", ts=200)])
    fix = event("copilot-odds", "2-0", [odd("c", ts=300)])
    h = enc.encode(
        [
            DecodedEvent.snapshot(GROUP, snap.received_at, odds=snap.odds),
            DecodedEvent.repair(GROUP, fix.received_at, fix.odds, epoch=1),
        ]
    )
    assert not h.changes and len(h.checked_changes) == 3 and not h.marks
    # (entry key, kind, entry text): kind 3 a snapshot's row, 4 a repair's; no entry id.
    assert [(e[1], e[4], e[5]) for e in h.checked_events] == [(0, 3, None)] * 2 + [(0, 4, None)]
    assert [r[CHECKED_COLUMNS.index("source")] for r in h.checked_changes] == [3, 3, 4]
    assert [odd for odd, _ in h.from_rest] == ["a", "b", "c"]


def test_the_stream_row_of_an_odd_with_a_row_made_from_rest_is_checked_for_a_while() -> None:
    # So that the stream's row of the same change replaces the snapshot's (one change, one row).
    enc = _encoder()
    snap = event("copilot-odds", "1-0", [odd("a", ts=100)])
    enc.encode([DecodedEvent.snapshot(GROUP, snap.received_at, odds=snap.odds)])
    assert not enc.encode([event("copilot-odds", "5-0", [odd("a", ts=100)])]).changes
    assert enc.encode([event("copilot-odds", "6-0", [odd("b", ts=100)])]).changes  # another odd
    # Only a row of the snapshot's time can be the same change: a newer one goes straight in.
    assert enc.encode([event("copilot-odds", "6-1", [odd("a", ts=101)])]).changes
    assert not enc.encode([event("copilot-odds", "6-2", [odd("a", ts=99)])]).changes
    enc.now += FROM_REST_S
    assert enc.encode([event("copilot-odds", "7-0", [odd("a", ts=101)])]).changes


def test_rows_made_from_rest_are_forgotten_once_every_window_has_closed() -> None:
    # Remembered, they cost every streamed odd a lookup; the encoder also skips the lookup
    # for a row newer than every row made from REST.
    enc = _encoder()
    snap = event("copilot-odds", "1-0", [odd("a", ts=100), odd("b", ts=200)])
    enc.encode([DecodedEvent.snapshot(GROUP, snap.received_at, odds=snap.odds)])
    ctx = enc.state.history_context()
    assert set(ctx.from_rest) == {"a", "b"} and ctx.rest_newest == snap.odds[1].source_ts
    enc.now += FROM_REST_S / 2
    later = event("copilot-odds", "2-0", [odd("c", ts=50)])
    enc.encode([DecodedEvent.repair(GROUP, later.received_at, later.odds, epoch=1)])
    enc.now += FROM_REST_S / 2  # the snapshot's window closed, the repair's is open
    assert not enc.encode([event("copilot-odds", "5-0", [odd("c", ts=50)])]).changes
    assert set(enc.state.history_context().from_rest) == {"a", "b", "c"}
    enc.now += FROM_REST_S
    assert enc.encode([event("copilot-odds", "6-0", [odd("c", ts=50)])]).changes
    ctx = enc.state.history_context()
    assert not ctx.from_rest and ctx.rest_newest is None


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
    exact = {r[0]: r[7] for r in change_records(h)}
    assert exact == {odd_key("a"): [1 / 3, None], odd_key("b"): None}


def test_the_codes_of_the_rows_that_go_straight_in_are_the_flushs() -> None:
    enc = _encoder()
    settled = [settled_odd("a", settlement="Won"), settled_odd("b", settlement="Void Leg")]
    h = enc.encode([event("copilot-settled-odds", "5-0", settled)])
    assert h.texts == {"Won", "Void Leg"} and h.unsettled == [] and h.codes == {}
    with pytest.raises(KeyError, match="Won"):  # the flush fills the codes in first
        change_records(h)
    h.codes = {"Won": 7, "Void Leg": 9}  # what the flush's database has
    codes = {r[0]: r[5] for r in change_records(h)}
    assert codes == {odd_key("a"): 7, odd_key("b"): 9}


def test_a_settlement_text_without_a_code_is_left_for_the_flush_in_a_checked_row() -> None:
    enc = _encoder()
    settled = [settled_odd("a", settlement="Won"), settled_odd("b", settlement="Void Leg")]
    h = enc.encode([event("copilot-settled-odds", "5-0", settled)], check_all=True)
    codes = {r[0]: r[5] for r in h.checked_changes}
    assert codes[odd_key("a")] == 1 and codes[odd_key("b")] is None
    assert [(text, rec[0]) for rec, text in h.unsettled] == [("Void Leg", odd_key("b"))]


def test_a_group_handed_over_uncleanly_is_checked_for_a_while() -> None:
    enc = _encoder()
    state = enc.state
    state.handed_over(GROUP, careful=False)
    assert state.stale_groups() == {1}  # the mark is read again, nothing more
    state.marks_read([], state.stale_groups())
    assert not state.any_checked()
    assert enc.encode([event("copilot-odds", "5-0", [odd("a")])]).changes  # straight in
    state.handed_over(GROUP, careful=True)
    state.marks_read([], state.stale_groups())
    assert not enc.encode([event("copilot-odds", "6-0", [odd("a")])]).changes  # checked
    enc.now += HANDOVER_S  # the window is over
    assert enc.encode([event("copilot-odds", "7-0", [odd("a")])]).changes


def test_a_careful_window_ends_for_a_group_that_sends_nothing_more() -> None:
    # The giver never sees the group's events again: the window must still end, or every
    # later batch would be encoded inside its flush instead of ahead of it.
    enc = _encoder()
    state = enc.state
    state.handed_over(GROUP, careful=True)
    state.marks_read([], state.stale_groups())
    assert state.any_checked()
    enc.now += HANDOVER_S  # the deadline passed
    assert not state.any_checked() and state.history_context().checked == frozenset()


def test_a_handover_while_the_marks_are_read_is_read_again() -> None:
    state = _encoder().state
    state.handed_over(GROUP, careful=False)
    read_for = state.stale_groups()
    state.handed_over(WNBA, careful=False)  # arrives during the read
    state.marks_read([(1, 7)], read_for)
    assert state.history_context().marks[1] == 7 and state.stale_groups() == {2}
