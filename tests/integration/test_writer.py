"""The write path's rules against real PostgreSQL: newer wins per column group, cursors move
forward only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import GROUP, event, history_of, odds_row, write_batches

A = "1:-1:FIX1:moneyline:team_a"


B = "1:-1:FIX1:moneyline:team_b"


async def test_update_lock_settle_in_separate_flushes(database_url: str, pg: Any) -> None:
    await write_batches(
        database_url,
        [event("copilot-odds", "100-0", [odd(A, price=-110, ts=10)])],
        [event("copilot-odds", "101-0", [odd(A, price=-120, ts=11)])],
        [event("copilot-locked-odds", "102-0", [odd(A, price=-125, ts=12)])],
        [event("copilot-settled-odds", "103-0", [_settled(A, ts=13), _settled(B, 13, "Push Leg")])],
    )
    row = await odds_row(pg, A)
    assert (row["status"], row["price"], row["settlement"]) == ("settled", -125, "Won")
    assert row["entry_id"] == "103-0"
    assert row["settled_at"].isoformat() == "2024-07-16T22:00:00+00:00"
    assert row["player_id"] is None and row["team_id"] is None  # "" is stored as null
    assert await history_of(pg, A) == [
        ("odds", "100-0", -110),
        ("odds", "101-0", -120),
        ("locked", "102-0", -125),
        ("settled", "103-0", None),
    ]
    # A text first seen in this flush: its code is learnt after the encoding and filled in.
    settled = "SELECT settlement FROM odds_history WHERE id = $1 AND kind = 'settled'"
    assert await pg.fetchval(settled, B) == "Push Leg"


def _settled(uid: str, ts: float, value: str = "Won") -> dict[str, Any]:
    return settled_odd(uid, ts=ts, settlement=value, settled_at="2024-07-16T22:00:00+00:00")


async def test_older_update_after_newer_changes_nothing(database_url: str, pg: Any) -> None:
    await write_batches(
        database_url,
        [event("copilot-odds", "200-0", [odd(A, price=-150, ts=20)])],
        [event("copilot-odds", "150-0", [odd(A, price=-105, ts=15)])],
    )
    row = await odds_row(pg, A)
    assert (row["price"], row["entry_id"]) == (-150, "200-0")
    # The late event is still history: it happened, it just is not the current state.
    assert sorted(await history_of(pg, A)) == [("odds", "150-0", -105), ("odds", "200-0", -150)]


async def test_entry_ids_compare_numerically(database_url: str, pg: Any) -> None:
    # Same source time: "9-0" is older than "10-0" although it sorts later as text.
    await write_batches(
        database_url,
        [event("copilot-odds", "10-0", [odd(A, price=-200, ts=5)])],
        [event("copilot-odds", "9-0", [odd(A, price=-300, ts=5)])],
        [event("copilot-odds", "10-1", [odd(B, price=1, ts=5)])],
        [event("copilot-odds", "10-0", [odd(B, price=2, ts=5)])],
    )
    assert (await odds_row(pg, A))["price"] == -200
    assert (await odds_row(pg, B))["price"] == 1


async def test_same_key_settlement_beats_lock(database_url: str, pg: Any) -> None:
    # The vendor's own examples: lock and settlement share timestamp and entry_id.
    await write_batches(
        database_url,
        [event("copilot-settled-odds", "300-0", [_settled(A, ts=30, value="Lost")])],
        [event("copilot-locked-odds", "300-0", [odd(A, price=-103, ts=30)])],
    )
    row = await odds_row(pg, A)
    assert (row["status"], row["settlement"], row["price"]) == ("settled", "Lost", -103)
    assert sorted(await history_of(pg, A)) == [
        ("locked", "300-0", -103),
        ("settled", "300-0", None),
    ]


async def test_many_updates_of_one_odd_in_one_batch(database_url: str, pg: Any) -> None:
    batch = [
        event("copilot-odds", f"{400 + i}-0", [odd(A, price=-100 - i, ts=40 + i)])
        for i in range(50)
    ]
    batch.reverse()  # out of order inside the batch, too
    batch.append(event("copilot-odds", "449-0", [odd(A, price=-149, ts=89)]))  # duplicate
    await write_batches(database_url, batch)
    row = await odds_row(pg, A)
    assert (row["price"], row["entry_id"], row["status"]) == (-149, "449-0", "open")
    assert await pg.fetchval("SELECT count(*) FROM odds_history WHERE id = $1", A) == 50


async def test_update_then_settlement_in_one_batch_keeps_new_price(
    database_url: str, pg: Any
) -> None:
    await write_batches(
        database_url,
        [event("copilot-odds", "500-0", [odd(A, price=-105, ts=50)])],
        [
            event("copilot-odds", "501-0", [odd(A, price=-130, ts=51, points=2.5)]),
            event("copilot-settled-odds", "502-0", [_settled(A, ts=52)]),
        ],
    )
    row = await odds_row(pg, A)
    assert (row["status"], row["price"], row["points"]) == ("settled", -130, 2.5)


async def test_late_price_after_settlement_updates_price_not_status(
    database_url: str, pg: Any
) -> None:
    # Each column group follows its own newest event: the settlement stays, and the price is
    # the one of the newest priced event, whatever order they arrived in.
    await write_batches(
        database_url,
        [event("copilot-odds", "600-0", [odd(A, price=-105, ts=60)])],
        [event("copilot-settled-odds", "602-0", [_settled(A, ts=62)])],
        [event("copilot-locked-odds", "601-0", [odd(A, price=-140, ts=61)])],
    )
    row = await odds_row(pg, A)
    assert (row["status"], row["price"], row["entry_id"]) == ("settled", -140, "602-0")


async def test_cursor_moves_forward_only(database_url: str, pg: Any) -> None:
    committed = await write_batches(
        database_url,
        [event("copilot-odds", "900-3", [odd(A, ts=90)])],
        [event("copilot-odds", "900-2", [odd(B, ts=91)])],
    )
    assert committed[GROUP].entry_id == "900-3" and len(committed) == 1
    row = await pg.fetchrow("SELECT * FROM stream_cursors WHERE group_key = $1", GROUP)
    assert (row["last_entry_id"], row["last_event_id"]) == ("900-3", "900-3")


async def test_fixture_status_merges_non_null_fields(database_url: str, pg: Any) -> None:
    def status(entry: str, ts: float, new_status: str | None, start: str | None) -> Any:
        body = {
            "fixture": {
                "id": "FX",
                "game_id": "g",
                "home_team_display": "H",
                "away_team_display": "A",
                "start_date": "2024-08-28T20:20:00+00:00",
            },
            "fixture_id": "FX",
            "game_id": "g",
            "league": "ATP",
            "sport": "tennis",
            "new_start_date": start,
            "old_start_date": None,
            "new_status": new_status,
            "old_status": None,
            "timestamp": ts,
        }
        return event("fixture-status", entry, payload={"entry_id": entry, "data": body})

    await write_batches(
        database_url,
        [status("1-0", 1.5, "Live", None)],
        [status("2-0", 2.5, None, "2024-08-28T20:30:00")],
        [status("0-5", 0.5, "unplayed", None)],  # older: must not undo "live"
        [status("2-0", 2.5, None, "2024-08-28T20:30:00")],  # replay
    )
    row = await pg.fetchrow("SELECT * FROM fixtures WHERE fixture_id = 'FX'")
    assert row["status"] == "live"
    assert row["start_date"].isoformat() == "2024-08-28T20:30:00+00:00"
    assert (row["home_team_display"], row["league"], row["entry_id"]) == ("H", "ATP", "2-0")
    assert await pg.fetchval("SELECT count(*) FROM fixture_status_history") == 3


async def test_sharded_writer_keeps_every_rule(database_url: str, pg: Any) -> None:
    batch = [
        event(
            "copilot-odds",
            f"{800 + i}-0",
            [odd(f"s{j}", price=-100 - i, ts=80 + i) for j in range(8)],
        )
        for i in range(20)
    ]
    batch.reverse()
    batch.append(event("copilot-settled-odds", "900-0", [_settled("s3", ts=200)]))
    # Three connections (current state sharded), then the default two (history apart), each
    # from an empty database.
    for connections in (3, 2):
        await pg.execute(
            "TRUNCATE odds, odds_changes, change_events, history_marks, stream_cursors"
        )
        committed = await write_batches(database_url, batch, batch, connections=connections)
        assert committed[GROUP].entry_id == "900-0" and len(committed) == 1
        rows = {r["id"]: r for r in await pg.fetch("SELECT * FROM odds")}
        assert len(rows) == 8 and all(r["price"] == -119 for r in rows.values())
        assert rows["s3"]["status"] == "settled"
        assert await pg.fetchval("SELECT count(*) FROM odds_history") == 8 * 20 + 1


async def test_fields_a_newer_event_lacks_survive(database_url: str, pg: Any) -> None:
    def settled(ts: float) -> dict[str, Any]:
        return settled_odd(
            "x", ts=ts, settled_at="2024-01-01T00:00:00+00:00", omit=("selection_line",)
        )

    fixture = {
        "fixture": {
            "id": "F",
            "home_team_display": "Heat",
            "start_date": "2024-08-28T20:20:00+00:00",
        },
        "fixture_id": "F",
        "timestamp": 1,
        "new_status": "live",
    }
    later = {"fixture_id": "F", "timestamp": 2, "new_status": "completed"}
    await write_batches(
        database_url,
        [
            event("copilot-odds", "1-0", [odd("x", ts=1, selection_line="over", version_id=1)]),
            event("copilot-settled-odds", "2-0", [settled(2)]),
            event("fixture-status", "1-0", payload={"entry_id": "1-0", "data": fixture}),
        ],
        [
            event("fixture-status", "2-0", payload={"entry_id": "2-0", "data": later}),
        ],
    )
    row = await pg.fetchrow("SELECT * FROM odds WHERE id = 'x'")
    assert (row["selection_line"], row["status"]) == ("over", "settled")
    f = await pg.fetchrow("SELECT * FROM fixtures WHERE fixture_id = 'F'")
    assert (f["home_team_display"], f["status"]) == ("Heat", "completed")
    assert f["start_date"] is not None


async def test_a_late_replay_beside_a_newer_event_changes_nothing(
    database_url: str, pg: Any
) -> None:
    def settled(ts: float) -> dict[str, Any]:
        return settled_odd(
            "y",
            ts=ts,
            settlement="Lost",
            settled_at="2024-01-01T00:00:00+00:00",
            omit=("selection_line",),
            version_id=2,
        )

    await write_batches(
        database_url,
        [event("copilot-odds", "5-0", [odd("y", ts=5, selection_line="new", version_id=2)])],
        [
            event("copilot-odds", "3-0", [odd("y", ts=3, selection_line="old", version_id=1)]),
            event("copilot-settled-odds", "7-0", [settled(7)]),
        ],
    )
    row = await pg.fetchrow("SELECT * FROM odds WHERE id = 'y'")
    assert (row["selection_line"], row["version_id"], row["status"]) == ("new", 2, "settled")


NOW = datetime(2026, 1, 1, tzinfo=UTC)


KINDS = ["copilot-odds", "copilot-locked-odds", "copilot-settled-odds"]


events_for_one_odd = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(1, 5), st.integers(0, 3), st.integers(-300, 300)),
    min_size=1,
    max_size=8,
)


def _truth(seq: list[tuple[str, int, int, int]]) -> tuple[str, float | None, str | None]:
    """Status from the newest event; price from the newest priced; settlement likewise."""
    rank = {k: i for i, k in enumerate(KINDS)}
    key = lambda e: (e[1], e[2], rank[e[0]])  # noqa: E731
    newest = max(seq, key=key)
    priced = [e for e in seq if e[0] != "copilot-settled-odds"]
    settled = [e for e in seq if e[0] == "copilot-settled-odds"]
    status = {"copilot-odds": "open", "copilot-locked-odds": "locked"}.get(newest[0], "settled")
    price = float(max(priced, key=key)[3]) if priced else None
    settlement = f"S{max(settled, key=key)[3]}" if settled else None
    return status, price, settlement


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seq=events_for_one_odd, split=st.integers(0, 8))
def test_any_order_of_events_for_one_odd_ends_newest(
    database_url: str, seq: list[tuple[str, int, int, int]], split: int
) -> None:
    def build(e: tuple[str, int, int, int]) -> Any:
        etype, ts, seq_no, value = e
        item = (
            settled_odd("x", ts=ts, settlement=f"S{value}", settled_at="2024-01-01T00:00:00+00:00")
            if etype == "copilot-settled-odds"
            else odd("x", ts=ts, price=value)
        )
        return event(etype, f"{ts}000-{seq_no}", [item])

    async def run() -> tuple[str, float | None, str | None]:

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "TRUNCATE odds, odds_changes, change_events, history_marks, stream_cursors"
            )
            evs = [build(e) for e in seq]
            await write_batches(database_url, *[b for b in (evs[:split], evs[split:]) if b])
            row = await conn.fetchrow("SELECT status, price, settlement FROM odds WHERE id='x'")
        finally:
            await conn.close()
        return row["status"], row["price"], row["settlement"]

    # Equal keys are one event told twice; keep the first such event so the truth is defined.
    unique: dict[tuple[str, int, int], tuple[str, int, int, int]] = {}
    for e in seq:
        unique.setdefault((e[0], e[1], e[2]), e)
    seq = list(unique.values())
    assert asyncio.run(run()) == _truth(seq)
