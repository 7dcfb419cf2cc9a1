"""Batch building, pure: one current row per odd per column group, cursors, connections."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from ingestor.domain.events import DecodedEvent
from ingestor.storage.sql import ODDS_COLUMNS
from ingestor.storage.write.batch import (
    build_batch,
    build_batches,
    current_records,
    lag_counts,
    pure_lag_counts,
)
from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import event

PRICE = ODDS_COLUMNS.index("price")
STATUS = ODDS_COLUMNS.index("status")
SETTLEMENT = ODDS_COLUMNS.index("settlement")


def test_one_current_row_per_odd_and_every_history_row() -> None:
    batch = build_batch(
        [
            event("copilot-odds", "10-0", [odd("a", price=-110, ts=1), odd("b", price=100, ts=1)]),
            event("copilot-odds", "11-0", [odd("a", price=-120, ts=2)]),
        ]
    )
    assert sum(len(e.odds) for e in batch.history_events) == 3
    current = {r[0]: r for r in current_records(batch.odds)}
    assert set(current) == {"a", "b"} and current["a"][PRICE] == -120


def test_a_settlement_keeps_the_newest_price_in_any_order() -> None:
    for order in ((0, 1), (1, 0)):
        evs = [
            event("copilot-odds", "10-0", [odd("a", price=-150, ts=1)]),
            event("copilot-settled-odds", "12-0", [settled_odd("a", ts=3)]),
        ]
        (row,) = current_records(build_batch([evs[i] for i in order]).odds)
        assert (row[PRICE], row[STATUS], row[SETTLEMENT]) == (-150, "settled", "Won")


def test_the_cursor_is_the_highest_entry_id_not_the_last_one() -> None:
    batch = build_batch(
        [
            event("copilot-odds", "9-0", [odd("a", ts=1)]),
            event("copilot-odds", "10-0", [odd("a", ts=2)]),
            event("copilot-odds", "9-5", [odd("b", ts=1)]),  # late, out of order
        ]
    )
    (cursor,) = batch.cursors
    assert (cursor.entry_id, batch.stream_events) == ("10-0", 3)


def test_snapshots_never_move_a_cursor() -> None:
    snap = event("copilot-odds", "1-0", [odd("a")])
    snapshot = DecodedEvent.snapshot(snap.group_key, snap.received_at, odds=snap.odds)
    built = build_batch([snapshot])
    assert built.history_events == [snapshot] and len(built.odds) == 1
    assert not built.cursors and built.stream_events == 0


def test_two_connections_put_history_apart_and_cursors_in_the_first() -> None:
    evs = [event("copilot-odds", f"{i}-0", [odd(f"o{i}", ts=i)]) for i in range(1, 5)]
    first, history = build_batches(evs, 2)
    assert not first.history_events and history.history_events == evs
    assert len(first.odds) == 4 and first.cursors and not history.cursors
    three = build_batches(evs, 3)
    assert sum(len(b.odds) for b in three) == 4 and three[0].cursors
    assert not any(b.cursors for b in three[1:])


def test_shards_split_odds_and_keep_cursors_in_the_first() -> None:
    evs = [
        event("copilot-odds", f"{i}-0", [odd(f"o{i}-{j}", ts=i) for j in range(6)])
        for i in range(1, 40)
    ]
    evs.append(event("copilot-odds", "40-0", [odd("o1-0", ts=40)]))  # the same odd again
    *odds_shards, history = build_batches(evs, 4)
    # History on a connection of its own, every row of the batch in it.
    assert sum(len(e.odds) for e in history.history_events) == 39 * 6 + 1
    assert not history.odds and not history.cursors
    # Current state: each odd on exactly one of the other three, none of them with history.
    ids = [{c.latest.id for c in b.odds} for b in odds_shards]
    assert sum(len(b.odds) for b in odds_shards) == 39 * 6  # o1-0 collapsed to one row
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert not any(b.history_events for b in odds_shards)
    assert [len(b.cursors) for b in odds_shards] == [1, 0, 0]
    assert odds_shards[0].cursors[0].entry_id == "40-0"
    assert sum(b.stream_events for b in odds_shards) == 40  # each event counted once


def test_two_connections_split_history_from_current_state() -> None:
    evs = [
        event("copilot-odds", f"{i}-0", [odd(f"o{j}", ts=i) for j in range(5)])
        for i in range(1, 10)
    ]
    current, history = build_batches(evs, 2)
    whole = build_batch(evs)
    assert current_records(current.odds) == current_records(whole.odds)
    assert not current.history_events
    assert history.history_events == whole.history_events and not history.odds
    assert [c.entry_id for c in current.cursors] == ["9-0"]


def test_the_lag_counts_every_streamed_odd_once_by_its_source_time() -> None:
    evs = [
        event("copilot-odds", "1-0", [odd("a", ts=1), odd("b", ts=1), odd("c", ts=2)]),
        event("copilot-odds", "2-0", [odd("d", ts=1), odd("e", ts=3)]),
    ]
    now = datetime.fromtimestamp(4, UTC)
    bounds = (1.5, 2.5, math.inf)  # lags: 3 s (three odds), 2 s (one), 1 s (one)
    for shards in (1, 2, 3):
        counts, total = [0, 0, 0], 0.0
        for b in build_batches(evs, shards):
            got = lag_counts(b.streamed, now, bounds)
            assert got == pure_lag_counts(b.streamed, now, bounds)
            counts = [x + y for x, y in zip(counts, got[0], strict=True)]
            total += got[1]
        assert (counts, total) == ([1, 1, 3], 12.0), shards


def test_the_history_batch_knows_its_groups_and_odds_and_the_first_every_epoch() -> None:
    # The writer reads these instead of passing over the events again (numbers, fences, the
    # batch-size histogram); a batch of parts (3+ connections) carries no epoch of its own.
    evs = [
        event("copilot-odds", "10-0", [odd("a"), odd("b")]),
        event("copilot-odds", "3-0", [odd("c")], group="copilot:basketball:WNBA"),
        event("copilot-odds", "11-0", []),  # no odds: fenced all the same
    ]
    for ev, epoch in zip(evs, (4, 7, 5), strict=True):
        ev.epoch = epoch
    for shards in (1, 2, 3):
        batches = build_batches(evs, shards)
        assert batches[-1].groups == {evs[0].group_key, evs[1].group_key}
        assert [b.odd_count for b in batches] == [0] * (len(batches) - 1) + [3]
        assert batches[0].epochs == {(e.group_key, e.epoch) for e in evs}
        assert all(not b.epochs for b in batches[1:])
