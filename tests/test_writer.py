"""The write path against real PostgreSQL: newer wins, history without duplicates, cursors."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ingestor.domain.events import EventQueue
from ingestor.metrics import Metrics
from ingestor.storage.writer import Writer
from tests.conftest import wait_until
from tests.fakefeed import odd
from tests.helpers import GROUP, event, write_batches

A = "1:-1:FIX1:moneyline:team_a"
B = "1:-1:FIX1:moneyline:team_b"


async def _odds(pg: Any, uid: str = A) -> Any:
    return await pg.fetchrow("SELECT * FROM odds WHERE id = $1", uid)


async def _history(pg: Any, uid: str = A) -> list[tuple[str, str, float | None]]:
    rows = await pg.fetch(
        "SELECT kind, entry_id, price FROM odds_history WHERE id = $1 ORDER BY history_id", uid
    )
    return [(r["kind"], r["entry_id"], r["price"]) for r in rows]


async def test_update_lock_settle_in_separate_flushes(database_url: str, pg: Any) -> None:
    await write_batches(
        database_url,
        [event("copilot-odds", "100-0", [odd(A, price=-110, ts=10)])],
        [event("copilot-odds", "101-0", [odd(A, price=-120, ts=11)])],
        [event("copilot-locked-odds", "102-0", [odd(A, price=-125, ts=12)])],
        [event("copilot-settled-odds", "103-0", [_settled(A, ts=13)])],
    )
    row = await _odds(pg)
    assert (row["status"], row["price"], row["settlement"]) == ("settled", -125, "Won")
    assert row["entry_id"] == "103-0"
    assert row["settled_at"].isoformat() == "2024-07-16T22:00:00+00:00"
    assert row["player_id"] is None and row["team_id"] is None  # "" is stored as null
    assert await _history(pg) == [
        ("odds", "100-0", -110),
        ("odds", "101-0", -120),
        ("locked", "102-0", -125),
        ("settled", "103-0", None),
    ]


def _settled(uid: str, ts: float, value: str = "Won") -> dict[str, Any]:
    item = odd(uid, ts=ts, settlement=value, settled_at="2024-07-16T22:00:00+00:00")
    for key in ("price", "points", "is_main", "is_live", "grouping_key"):
        del item[key]
    return item


async def test_older_update_after_newer_changes_nothing(database_url: str, pg: Any) -> None:
    await write_batches(
        database_url,
        [event("copilot-odds", "200-0", [odd(A, price=-150, ts=20)])],
        [event("copilot-odds", "150-0", [odd(A, price=-105, ts=15)])],
    )
    row = await _odds(pg)
    assert (row["price"], row["entry_id"]) == (-150, "200-0")
    # The late event is still history: it happened, it just is not the current state.
    assert sorted(await _history(pg)) == [("odds", "150-0", -105), ("odds", "200-0", -150)]


async def test_entry_ids_compare_numerically(database_url: str, pg: Any) -> None:
    # Same source time: "9-0" is older than "10-0" although it sorts later as text.
    await write_batches(
        database_url,
        [event("copilot-odds", "10-0", [odd(A, price=-200, ts=5)])],
        [event("copilot-odds", "9-0", [odd(A, price=-300, ts=5)])],
        [event("copilot-odds", "10-1", [odd(B, price=1, ts=5)])],
        [event("copilot-odds", "10-0", [odd(B, price=2, ts=5)])],
    )
    assert (await _odds(pg, A))["price"] == -200
    assert (await _odds(pg, B))["price"] == 1


async def test_same_key_settlement_beats_lock(database_url: str, pg: Any) -> None:
    # The vendor's own examples: lock and settlement share timestamp and entry_id.
    await write_batches(
        database_url,
        [event("copilot-settled-odds", "300-0", [_settled(A, ts=30, value="Lost")])],
        [event("copilot-locked-odds", "300-0", [odd(A, price=-103, ts=30)])],
    )
    row = await _odds(pg)
    assert (row["status"], row["settlement"], row["price"]) == ("settled", "Lost", -103)
    assert sorted(await _history(pg)) == [("locked", "300-0", -103), ("settled", "300-0", None)]


async def test_many_updates_of_one_odd_in_one_batch(database_url: str, pg: Any) -> None:
    batch = [
        event("copilot-odds", f"{400 + i}-0", [odd(A, price=-100 - i, ts=40 + i)])
        for i in range(50)
    ]
    batch.reverse()  # out of order inside the batch, too
    batch.append(event("copilot-odds", "449-0", [odd(A, price=-149, ts=89)]))  # duplicate
    await write_batches(database_url, batch)
    row = await _odds(pg)
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
    row = await _odds(pg)
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
    row = await _odds(pg)
    assert (row["status"], row["price"], row["entry_id"]) == ("settled", -140, "602-0")


async def test_replayed_batch_adds_nothing(database_url: str, pg: Any) -> None:
    batch = [
        event("copilot-odds", "700-0", [odd(A, price=-110, ts=70), odd(B, price=100, ts=70)]),
        event("copilot-locked-odds", "701-0", [odd(A, price=-110, ts=71)]),
    ]
    metrics = Metrics()
    await write_batches(database_url, batch, metrics=metrics)
    before = await pg.fetch("SELECT * FROM odds ORDER BY id")
    await write_batches(database_url, batch, batch, metrics=metrics)
    assert await pg.fetch("SELECT * FROM odds ORDER BY id") == before  # not even updated_at
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 3
    written = metrics.registry.get_sample_value
    assert written("ingestor_rows_written_total", {"table": "odds_history"}) == 3
    # Each of the two writers tried the fast COPY, met the stored rows and redid the flush.
    assert written("ingestor_history_replays_total") == 2


async def test_after_a_replay_the_next_flushes_skip_the_fast_copy(
    database_url: str, pg: Any
) -> None:
    events = [
        event("copilot-odds", f"{750 + i}-0", [odd(A, price=-i, ts=75 + i)]) for i in range(3)
    ]
    await write_batches(database_url, events)
    metrics = Metrics()
    queue: EventQueue = asyncio.Queue()
    for ev in [*events, None]:
        queue.put_nowait(ev)
    writer = Writer(database_url, queue, metrics, batch_max_rows=1, retry_max_s=1)
    await writer.run()
    assert writer.flushes == 3
    # One failed COPY, then the replay burst is taken by ON CONFLICT at once.
    assert metrics.registry.get_sample_value("ingestor_history_replays_total") == 1
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 3


async def test_replay_mixed_with_new_rows_keeps_the_new(database_url: str, pg: Any) -> None:
    old = event("copilot-odds", "800-0", [odd(A, price=-110, ts=80)])
    new = event("copilot-odds", "801-0", [odd(A, price=-115, ts=81), odd(B, price=5, ts=81)])
    await write_batches(database_url, [old])
    await write_batches(database_url, [old, new])
    assert await _history(pg, A) == [("odds", "800-0", -110), ("odds", "801-0", -115)]
    assert await _history(pg, B) == [("odds", "801-0", 5)]
    assert (await _odds(pg, A))["price"] == -115


async def test_cursor_moves_forward_only(database_url: str, pg: Any) -> None:
    committed = await write_batches(
        database_url,
        [event("copilot-odds", "900-3", [odd(A, ts=90)])],
        [event("copilot-odds", "900-2", [odd(B, ts=91)])],
    )
    assert committed.entry_id(GROUP) == "900-3" and len(committed) == 1
    row = await pg.fetchrow("SELECT * FROM stream_cursors WHERE group_key = $1", GROUP)
    assert (row["last_entry_id"], row["last_event_id"]) == ("900-3", "900-3")


async def test_fixture_status_merges_non_null_fields(database_url: str, pg: Any) -> None:
    def status(entry: str, ts: float, new_status: str | None, start: str | None) -> Any:
        body = {
            "fixture": {"id": "FX", "game_id": "g", "home_team_display": "H",
                        "away_team_display": "A", "start_date": "2024-08-28T20:20:00+00:00"},
            "fixture_id": "FX", "game_id": "g", "league": "ATP", "sport": "tennis",
            "new_start_date": start, "old_start_date": None, "new_status": new_status,
            "old_status": None, "timestamp": ts,
        }  # fmt: skip
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


def test_shards_split_odds_and_keep_cursors_in_the_first() -> None:
    from ingestor.storage.batch import build_batches

    evs = [event("copilot-odds", f"{i}-0", [odd(f"o{i}-{j}", ts=i) for j in range(6)])
           for i in range(1, 40)]  # fmt: skip
    evs.append(event("copilot-odds", "40-0", [odd("o1-0", ts=40)]))  # the same odd again
    *odds_shards, history = build_batches(evs, 4)
    # History on a connection of its own, every row of the batch in it.
    assert len(history.odds_history) == 39 * 6 + 1 and not history.odds
    assert history.history_plain and not history.cursors
    # Current state: each odd on exactly one of the other three, none of them with history.
    ids = [{r[0] for r in b.odds} for b in odds_shards]
    assert sum(len(b.odds) for b in odds_shards) == 39 * 6  # o1-0 collapsed to one row
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert not any(b.odds_history for b in odds_shards)
    assert [len(b.cursors) for b in odds_shards] == [1, 0, 0]
    assert odds_shards[0].cursors[0].entry_id == "40-0"
    assert sum(b.stream_events for b in odds_shards) == 40  # each event counted once


def test_two_connections_split_history_from_current_state() -> None:
    from ingestor.storage.batch import build_batch, build_batches

    evs = [event("copilot-odds", f"{i}-0", [odd(f"o{j}", ts=i) for j in range(5)])
           for i in range(1, 10)]  # fmt: skip
    current, history = build_batches(evs, 2)
    whole = build_batch(evs)
    assert current.odds == whole.odds and not current.odds_history
    assert history.odds_history == whole.odds_history and not history.odds
    assert [c.entry_id for c in current.cursors] == ["9-0"]


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
        await pg.execute("TRUNCATE odds, odds_history, stream_cursors")
        committed = await write_batches(database_url, batch, batch, connections=connections)
        assert committed.entry_id(GROUP) == "900-0" and len(committed) == 1
        rows = {r["id"]: r for r in await pg.fetch("SELECT * FROM odds")}
        assert len(rows) == 8 and all(r["price"] == -119 for r in rows.values())
        assert rows["s3"]["status"] == "settled"
        assert await pg.fetchval("SELECT count(*) FROM odds_history") == 8 * 20 + 1


async def test_pipelined_flushes_stay_full_and_commit_in_order(database_url: str, pg: Any) -> None:
    # 23 one-odd events, five per flush: the next batch is built while the previous flush
    # is in the database, and that must neither shrink batches nor reorder commits.
    events = [
        event("copilot-odds", f"{1000 + i}-0", [odd(A, price=-i, ts=100 + i)]) for i in range(23)
    ]
    queue: EventQueue = asyncio.Queue()
    for ev in [*events, None]:
        queue.put_nowait(ev)
    metrics = Metrics()
    writer = Writer(database_url, queue, metrics, batch_max_rows=5, retry_max_s=1)
    await writer.run()
    assert writer.flushes == 5  # 5+5+5+5+3
    assert writer.cursors.entry_id(GROUP) == "1022-0" and len(writer.cursors) == 1
    assert (await _odds(pg))["price"] == -22
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 23
    rows = metrics.registry.get_sample_value
    assert rows("ingestor_batch_rows_sum") == 23 and rows("ingestor_batch_rows_count") == 5


def test_only_a_repeat_within_one_group_leaves_the_fast_history_copy() -> None:
    from ingestor.storage.batch import build_batch

    one = event("copilot-odds", "5-0", [odd(A, ts=5)])
    other_group = event("copilot-odds", "5-0", [odd(B, ts=5)], group="copilot:basketball:WNBA")
    assert build_batch([one, other_group]).history_plain
    assert not build_batch([one, other_group, one]).history_plain


async def test_a_batch_that_is_not_full_waits_for_the_flush_and_is_topped_up(
    database_url: str, pg: Any
) -> None:
    # Flush 1 (5 events) is held in its merge by a table lock while 2 more events wait in
    # the writer; 3 more arrive, the lock goes: all 5 must go in flush 2, not 2 then 3.
    def ev(i: int) -> Any:
        return event("copilot-odds", f"{2000 + i}-0", [odd(A, price=-i, ts=200 + i)])

    queue: EventQueue = asyncio.Queue()
    for i in range(7):
        queue.put_nowait(ev(i))
    writer = Writer(database_url, queue, Metrics(), batch_max_rows=5, retry_max_s=1)
    watcher = await asyncpg.connect(database_url)
    lock = pg.transaction()
    await lock.start()
    await pg.execute("LOCK TABLE odds IN SHARE MODE")  # blocks the merge's INSERT
    task = asyncio.create_task(writer.run())
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' " \
                  "AND datname = current_database()"  # fmt: skip
        await wait_until(lambda: watcher.fetchval(waiting))
        await wait_until(queue.empty)  # the writer holds events 5 and 6: not yet a batch
        for i in range(7, 10):
            queue.put_nowait(ev(i))
    finally:
        await lock.rollback()
        await watcher.close()
    queue.put_nowait(None)
    await asyncio.wait_for(task, 30)
    assert writer.flushes == 2
    assert (await _odds(pg))["price"] == -9


async def test_a_wait_cycle_through_both_writer_connections_ends_at_the_lock_timeout(
    database_url: str, pg: Any
) -> None:
    # The current-state connection waits, in Python, for the history connection: PostgreSQL
    # cannot see that edge. A session holding odds_history that then asks for
    # fixture_status_history closes a cycle; the writer's lock_timeout ends it, not the
    # flush timeout (120 s here).
    def status(entry: str) -> Any:
        body = {"fixture_id": "FX", "game_id": "g", "league": "ATP", "sport": "tennis",
                "new_status": "Live", "old_status": None, "timestamp": 30.0}  # fmt: skip
        return event("fixture-status", entry, payload={"entry_id": entry, "data": body})

    queue: EventQueue = asyncio.Queue()
    metrics = Metrics()
    writer = Writer(database_url, queue, metrics, batch_max_rows=100, retry_max_s=0.1,
                    flush_timeout_s=120, connections=2,
                    lock_timeout_s=2)  # fmt: skip
    task = asyncio.create_task(writer.run())
    queue.put_nowait(event("copilot-odds", "30-0", [odd(A, ts=30)]))
    await wait_until(lambda: writer.cursors.entry_id(GROUP) == "30-0")
    watcher = await asyncpg.connect(database_url)
    other = pg.transaction()
    await other.start()
    try:
        await pg.execute("LOCK TABLE odds_history IN ACCESS EXCLUSIVE MODE")
        queue.put_nowait(status("31-0"))
        queue.put_nowait(event("copilot-odds", "32-0", [odd(A, ts=32)]))
        # History connection queued behind us; the current-state connection already holds
        # fixture_status_history (being idle in its transaction is not enough: it may not
        # have reached that table yet).
        cycle_ready = """
            SELECT bool_or(l.granted AND l.relation = 'fixture_status_history'::regclass)
               AND bool_or(NOT l.granted)
            FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE a.application_name = 'ingestor-writer' AND a.datname = current_database()"""
        await wait_until(lambda: watcher.fetchval(cycle_ready), timeout_s=30)
        await asyncio.wait_for(
            pg.execute("LOCK TABLE fixture_status_history IN ACCESS EXCLUSIVE MODE"), 30
        )
    finally:
        await other.rollback()
        await watcher.close()
    await wait_until(lambda: writer.cursors.entry_id(GROUP) == "32-0", timeout_s=30)
    queue.put_nowait(None)
    await asyncio.wait_for(task, 30)
    # The flush failed on the lock timeout and was retried (what ended the cycle is checked
    # above: the other session got its second lock).
    assert metrics.db_errors.labels("LockNotAvailableError")._value.get() >= 1
    assert await pg.fetchval("SELECT count(*) FROM fixture_status_history") == 1


async def test_a_bug_in_batch_building_stops_the_process_and_dead_letters_nothing(
    database_url: str, pg: Any
) -> None:
    """A TypeError while encoding is our bug, not bad data: bisecting would file every good
    event of the batch as a dead letter one by one while the daemon looks healthy."""
    from tests.fakefeed import FakeFeed
    from tests.pipeline import build_pipeline, supervise

    feed = FakeFeed()
    await feed.start()
    p = await build_pipeline(database_url, feed)
    good = [event("copilot-odds", f"{i}-0", [odd(f"g{i}", ts=i)]) for i in range(1, 5)]
    buggy = event("copilot-odds", "9-0", [odd("b", ts=9)])
    buggy.odds[0].price = "-110"  # type: ignore[assignment]  # a str where a float belongs
    for ev in [*good, buggy]:
        p.queue.put_nowait(ev)
    try:
        supervise(p)
        assert p.task is not None
        assert await asyncio.wait_for(p.task, 20) == 1  # EXIT_FAILED: loud, not healthy
        assert p.sample("ingestor_task_failures_total", task="writer") == 1
        assert p.sample("ingestor_events_dropped_total", error="TypeError") == 0
        assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
        # Nothing of the failed batch claims to be stored: its events come again after the
        # restart (the cursor did not move past them).
        assert await pg.fetchval("SELECT last_entry_id FROM stream_cursors") is None
    finally:
        await p.close()
        await feed.stop()
