"""A connection's gap is in the ledger once the first event it brought is committed: the writer
records it in the transaction that moves the group's cursor, and gap tracking records the same
row (whichever comes first), so that no crash can land between the two."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

import asyncpg
import pytest

from ingestor.domain.events import DecodedEvent, GapStart
from ingestor.storage import sql
from ingestor.storage.gaps import PgGapLedger
from tests.conftest import wait_until
from tests.support.fakefeed import odd
from tests.support.helpers import GROUP, event, write_batches
from tests.support.pipeline import SimPipelineFactory
from tests.support.sim import settle

SINCE = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
T = TypeVar("T")
GAPS = "SELECT group_key, cause, from_ts, until_ts, opened_by, state, detail FROM stream_gaps"


def _carrying(entry: str, *gaps: GapStart) -> DecodedEvent:
    ev = event("copilot-odds", entry, [odd(f"1:-1:F:{entry}", price=-110, ts=10)])
    ev.gaps = gaps
    return ev


def _gap(why: str | None = None) -> GapStart:
    return GapStart(uuid4(), "reconnect", SINCE, SINCE + timedelta(seconds=3), why)


@pytest.mark.parametrize("connections", [1, 2, 3])
async def test_the_commit_that_moves_the_cursor_records_the_gaps_its_event_carries(
    database_url: str, pg: Any, connections: int
) -> None:
    first, second = _gap(), _gap()
    cursors = await write_batches(
        database_url,
        [_carrying("100-0"), _carrying("101-0", first, second), _carrying("102-0")],
        connections=connections,
    )
    assert cursors[GROUP].entry_id == "102-0"
    rows = [dict(r) for r in await pg.fetch(GAPS + " ORDER BY from_ts, gap_id")]
    assert rows == [
        {
            "group_key": GROUP,
            "cause": "reconnect",
            "from_ts": SINCE,
            "until_ts": SINCE + timedelta(seconds=3),
            "opened_by": gap.opened_by,
            "state": "open",
            "detail": None,
        }
        for gap in (first, second)
    ]


async def test_gap_tracking_and_the_writer_make_one_row_whoever_records_first(
    database_url: str, pg: Any
) -> None:
    ledger = PgGapLedger(database_url)
    try:
        early, late = _gap(), _gap()
        early_id = await ledger.open(
            GROUP, "reconnect", early.from_ts, early.until_ts, opened_by=early.opened_by
        )
        await write_batches(database_url, [_carrying("100-0", early, late)])
        late_id = await ledger.open(
            GROUP, "reconnect", late.from_ts, late.until_ts, opened_by=late.opened_by
        )
        ids = {r["opened_by"]: r["gap_id"] for r in await pg.fetch("SELECT * FROM stream_gaps")}
        assert ids == {early.opened_by: early_id, late.opened_by: late_id}
        # A failover gap has no connection: each is a row of its own.
        await ledger.open(GROUP, "failover", SINCE, SINCE)
        await ledger.open(GROUP, "failover", SINCE, SINCE)
        assert await pg.fetchval("SELECT count(*) FROM stream_gaps WHERE opened_by IS NULL") == 2
    finally:
        await ledger.close_pool()


async def test_an_unrepairable_gap_the_writer_records_is_closed_saying_why(
    database_url: str, pg: Any
) -> None:
    gap = _gap("the regular stream has no documented source of history")
    await write_batches(database_url, [_carrying("100-0", gap)])
    row = await pg.fetchrow("SELECT state, detail, closed_at FROM stream_gaps")
    assert (row["state"], row["detail"]) == ("unrepairable", gap.unrepairable)
    assert row["closed_at"] is not None


async def test_a_refused_first_event_takes_its_gaps_into_its_dead_letter(
    database_url: str, pg: Any
) -> None:
    # The connection's first event is one PostgreSQL refuses even alone (NUL in a text
    # field, past the decoder's check): its gaps are recorded with its dead letter, and the
    # next event moves the cursor past them.
    gap = _gap()
    first = _carrying("101-0", gap)
    first.odds[0].league = "N\x00BA"
    await write_batches(database_url, [_carrying("100-0"), first, _carrying("102-0")])
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 1
    rows = [dict(r) for r in await pg.fetch(GAPS)]
    assert [(r["opened_by"], r["state"], r["from_ts"]) for r in rows] == [
        (gap.opened_by, "open", SINCE)
    ]
    assert await pg.fetchval("SELECT last_entry_id FROM stream_cursors") == "102-0"


async def test_a_reconnects_gap_is_recorded_even_when_gap_tracking_never_gets_to_it(
    running: SimPipelineFactory, pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gap tracking's own INSERT never returns: the moment a crash would fall between the
    # commit of the reconnect's first events and that INSERT, held open. The ledger must hold
    # the gap all the same, or the next owner's gap would start at the moved cursor.
    never = asyncio.Event()

    async def hangs(self: PgGapLedger, *args: object, **kwargs: object) -> int:
        await never.wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(PgGapLedger, "open", hangs)
    sim, p = await running()
    await sim.server.emit(20)
    await settle(pg, sim)
    first_cursor = await pg.fetchval("SELECT last_entry_id FROM stream_cursors")
    assert await pg.fetchval("SELECT count(*) FROM stream_gaps") == 0  # never committed before
    assert sim.server.cut_all() == 1
    await wait_until(lambda: sim.server.connections_total >= 2, timeout_s=20)
    await sim.server.emit(20)
    await settle(pg, sim)
    assert await pg.fetchval("SELECT last_entry_id FROM stream_cursors") != first_cursor
    rows = await pg.fetch(GAPS)
    assert [(r["cause"], r["state"]) for r in rows] == [("reconnect", "open")]
    assert rows[0]["opened_by"] is not None
    assert await p.shutdown() == 0


async def test_a_snapshot_scopes_gaps_only_while_its_group_is_at_the_snapshots_epoch(
    database_url: str, pg: Any
) -> None:
    # The group moved on to epoch 3: a snapshot queued under 2 was fenced out by the writer,
    # so its odds may not be in `odds`. Were its odds queued, the repair would skip them (no
    # stored row to give them an identity) and mark the gap repaired with their history lost.
    await pg.execute(
        "INSERT INTO stream_cursors (group_key, stream, sport, leagues, epoch)"
        " VALUES ($1, 'copilot', 'basketball', '{NBA}', 3)",
        GROUP,
    )
    ledger = PgGapLedger(database_url)
    try:
        gap_id = await ledger.open(GROUP, "reconnect", SINCE, SINCE + timedelta(seconds=3))
        changed = {"new-odd": SINCE + timedelta(seconds=1)}
        taken = SINCE + timedelta(seconds=5)
        assert await ledger.scope(GROUP, changed, taken, 2) == 0
        state = "SELECT state FROM stream_gaps WHERE gap_id = $1"
        assert await pg.fetchval(state, gap_id) == "open"
        assert await pg.fetchval("SELECT count(*) FROM stream_gap_odds") == 0
        # The owner's own snapshot (epoch 3) scopes it; so does one that is not fenced (0).
        assert await ledger.scope(GROUP, changed, taken, 3) == 1
        assert await pg.fetchval(state, gap_id) == "repairing"
        other = await ledger.open(GROUP, "reconnect", SINCE, SINCE + timedelta(seconds=3))
        assert await ledger.scope(GROUP, changed, taken, 0) == 1
        assert await pg.fetchval(state, other) == "repairing"
    finally:
        await ledger.close_pool()


CHANGED = {f"odd-{i}": SINCE + timedelta(seconds=1) for i in range(5)}  # after the gap began
TAKEN = SINCE + timedelta(seconds=5)  # after it ended


async def _behind_a_scope(
    database_url: str, pg: Any, then: Callable[[PgGapLedger, int], Coroutine[Any, Any, T]]
) -> tuple[int, T]:
    """A gap, a scope of it held open in a transaction of its own (queuing CHANGED), and
    ``then`` run against the gap until it waits on the scope's locks; the scope commits."""
    ledger = PgGapLedger(database_url)
    first = await asyncpg.connect(database_url)
    try:
        gap_id = await ledger.open(GROUP, "reconnect", SINCE, SINCE + timedelta(seconds=3))
        ids, times = list(CHANGED), list(CHANGED.values())
        async with first.transaction():
            await first.fetch(sql.SCOPE_GAPS, GROUP, ids, times, TAKEN, 0)
            task = asyncio.create_task(then(ledger, gap_id))
            await wait_until(lambda: _waiting_on_a_lock(pg), timeout_s=10)
        return gap_id, await asyncio.wait_for(task, 10)
    finally:
        await first.close()
        await ledger.close_pool()


async def test_two_scopes_of_a_group_at_once_leave_its_gaps_to_repair(
    database_url: str, pg: Any
) -> None:
    # A new connection's snapshot scopes the group while the last one's scope is still in its
    # transaction. The second used to wait on the gaps the first had locked, then judge them by
    # what it saw before the first committed: no pairs, none it could add (they conflict), so
    # "no odd changed during it", and the gap closed with its odds never repaired.
    async def second(ledger: PgGapLedger, _: int) -> int:
        return await ledger.scope(GROUP, CHANGED, TAKEN, 0)

    gap_id, queued = await _behind_a_scope(database_url, pg, second)
    assert queued == 0  # the first queued them all
    row = await pg.fetchrow(
        "SELECT state, detail, odds_to_repair FROM stream_gaps WHERE gap_id = $1", gap_id
    )
    assert (row["state"], row["detail"], row["odds_to_repair"]) == ("repairing", None, 5)
    left = "SELECT count(*) FROM stream_gap_odds WHERE gap_id = $1 AND NOT done"
    assert await pg.fetchval(left, gap_id) == 5


async def test_a_gap_closed_while_a_scope_holds_it_keeps_no_pairs(
    database_url: str, pg: Any
) -> None:
    # The vendor replayed across a gap that a scope is queuing odds for: the close waits for
    # the scope, and its DELETE must see the pairs the scope committed (else they stay for
    # ever: the repair reads repairing gaps only, and pruning takes done pairs only).
    async def close(ledger: PgGapLedger, gap_id: int) -> None:
        await ledger.close([gap_id], "repaired", "replayed")

    gap_id, _ = await _behind_a_scope(database_url, pg, close)
    state = "SELECT state, detail FROM stream_gaps WHERE gap_id = $1"
    assert tuple(await pg.fetchrow(state, gap_id)) == ("repaired", "replayed")
    assert await pg.fetchval("SELECT count(*) FROM stream_gap_odds") == 0


async def _waiting_on_a_lock(pg: Any) -> bool:
    return bool(
        await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )
