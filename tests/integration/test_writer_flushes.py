"""How flushes run: replays, shards, pipelining, lock timeouts, bad rows and bugs."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ingestor.config import WriterSettings
from ingestor.domain.events import EventQueue
from ingestor.metrics import Metrics
from ingestor.storage.write import Writer
from tests.conftest import wait_until
from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import GROUP, event, history_of, odds_row, write_batches
from tests.support.pipeline import PipelineFactory, supervise

A = "1:-1:FIX1:moneyline:team_a"


B = "1:-1:FIX1:moneyline:team_b"


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
    assert written("ingestor_rows_written_total", {"table": "odds_changes"}) == 3
    # A new writer reads the groups' marks: the replayed rows are at or below them, so each
    # of the two replays went through the check, none was copied in blind.
    assert written("ingestor_history_checked_total") == 6


async def test_a_restarted_writer_checks_what_it_may_have_stored(
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
    writer = Writer(database_url, queue, metrics, _settings(1))
    await writer.run()
    assert writer.health().flushes == 3
    assert metrics.registry.get_sample_value("ingestor_history_checked_total") == 3
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 3
    # New entries after the replay are new by construction: copied straight in.
    later = [event("copilot-odds", "760-0", [odd(A, price=-9, ts=90)])]
    metrics = Metrics()
    await write_batches(database_url, later, metrics=metrics)
    assert metrics.registry.get_sample_value("ingestor_history_checked_total") == 0
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 4


async def test_replay_mixed_with_new_rows_keeps_the_new(database_url: str, pg: Any) -> None:
    old = event("copilot-odds", "800-0", [odd(A, price=-110, ts=80)])
    new = event("copilot-odds", "801-0", [odd(A, price=-115, ts=81), odd(B, price=5, ts=81)])
    await write_batches(database_url, [old])
    await write_batches(database_url, [old, new])
    assert await history_of(pg, A) == [("odds", "800-0", -110), ("odds", "801-0", -115)]
    assert await history_of(pg, B) == [("odds", "801-0", 5)]
    assert (await odds_row(pg, A))["price"] == -115


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
    writer = Writer(database_url, queue, metrics, _settings(5))
    await writer.run()
    assert writer.health().flushes == 5  # 5+5+5+5+3
    assert _entry(writer) == "1022-0" and writer.health().committed_groups == 1
    assert (await odds_row(pg, A))["price"] == -22
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 23
    rows = metrics.registry.get_sample_value
    assert rows("ingestor_batch_rows_sum") == 23 and rows("ingestor_batch_rows_count") == 5


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
    writer = Writer(database_url, queue, Metrics(), _settings(5))
    watcher = await asyncpg.connect(database_url)
    lock = pg.transaction()
    await lock.start()
    await pg.execute("LOCK TABLE odds IN SHARE MODE")  # blocks the merge's INSERT
    task = asyncio.create_task(writer.run())
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        await wait_until(lambda: watcher.fetchval(waiting))
        await wait_until(queue.empty)  # the writer holds events 5 and 6: not yet a batch
        for i in range(7, 10):
            queue.put_nowait(ev(i))
    finally:
        await lock.rollback()
        await watcher.close()
    queue.put_nowait(None)
    await asyncio.wait_for(task, 30)
    assert writer.health().flushes == 2
    assert (await odds_row(pg, A))["price"] == -9


async def test_a_wait_cycle_through_both_writer_connections_ends_at_the_lock_timeout(
    database_url: str, pg: Any
) -> None:
    # The current-state connection waits, in Python, for the history connection: PostgreSQL
    # cannot see that edge. A session holding odds_changes that then asks for
    # fixture_status_history closes a cycle; the writer's lock_timeout ends it, not the
    # flush timeout (120 s here).
    def status(entry: str) -> Any:
        body = {
            "fixture_id": "FX",
            "game_id": "g",
            "league": "ATP",
            "sport": "tennis",
            "new_status": "Live",
            "old_status": None,
            "timestamp": 30.0,
        }
        return event("fixture-status", entry, payload={"entry_id": entry, "data": body})

    queue: EventQueue = asyncio.Queue()
    metrics = Metrics()
    settings = WriterSettings(
        writer_batch_max_rows=100, flush_retry_max_s=0.1, flush_timeout_s=120, writer_connections=2
    )
    writer = _QuickLockWriter(database_url, queue, metrics, settings)
    task = asyncio.create_task(writer.run())
    queue.put_nowait(event("copilot-odds", "30-0", [odd(A, ts=30)]))
    await wait_until(lambda: _entry(writer) == "30-0")
    watcher = await asyncpg.connect(database_url)
    other = pg.transaction()
    await other.start()
    try:
        await pg.execute("LOCK TABLE odds_changes IN ACCESS EXCLUSIVE MODE")
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
    await wait_until(lambda: _entry(writer) == "32-0", timeout_s=30)
    queue.put_nowait(None)
    await asyncio.wait_for(task, 30)
    # The flush failed on the lock timeout and was retried (what ended the cycle is checked
    # above: the other session got its second lock).
    assert metrics.db_errors.labels("LockNotAvailableError")._value.get() >= 1
    assert await pg.fetchval("SELECT count(*) FROM fixture_status_history") == 1


async def test_a_bug_in_batch_building_stops_the_process_and_dead_letters_nothing(
    make_pipeline: PipelineFactory, pg: Any
) -> None:
    """A TypeError while encoding is our bug, not bad data: bisecting would file every good
    event of the batch as a dead letter one by one while the daemon looks healthy."""
    p = await make_pipeline()
    good = [event("copilot-odds", f"{i}-0", [odd(f"g{i}", ts=i)]) for i in range(1, 5)]
    buggy = event("copilot-odds", "9-0", [odd("b", ts=9)])
    buggy.odds[0].price = "-110"  # type: ignore[assignment]  # a str where a float belongs
    for ev in [*good, buggy]:
        p.queue.put_nowait(ev)
    supervise(p)
    assert p.task is not None
    assert await asyncio.wait_for(p.task, 20) == 1  # EXIT_FAILED: loud, not healthy
    assert p.sample("ingestor_task_failures_total", task="writer") == 1
    assert p.sample("ingestor_events_dropped_total", error="TypeError") == 0
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
    # Nothing of the failed batch claims to be stored: its events come again after the
    # restart (the cursor did not move past them).
    assert await pg.fetchval("SELECT last_entry_id FROM stream_cursors") is None


async def test_a_row_postgres_refuses_is_dropped_alone(database_url: str, pg: Any) -> None:
    good = [event("copilot-odds", f"{i}-0", [odd(f"o{i}", ts=i)]) for i in range(1, 7)]
    bad = event("copilot-odds", "4-5", [odd("poison", ts=4)])
    bad.odds[0].league = "N\x00BA"  # past the decoder's check: PostgreSQL text refuses NUL
    metrics = Metrics()
    await write_batches(database_url, [*good[:3], bad, *good[3:]], metrics=metrics)
    ids = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    assert ids == {f"o{i}" for i in range(1, 7)}
    assert sum(v for k, v in _samples(metrics, "ingestor_events_dropped_total")) == 1
    letter = await pg.fetchrow("SELECT * FROM dead_letters")
    assert letter["reason"].startswith("db_") and '"poison"' in letter["payload"]


async def test_a_price_beyond_real_is_dropped_alone_not_a_writer_crash(
    database_url: str, pg: Any
) -> None:
    # odds_changes.price is real: 1e39 cannot be stored there. The COPY encoder finds it
    # before PostgreSQL would, and it is the feed's value, not a bug: the event becomes a dead
    # letter and the rest of the batch commits (asyncpg's encoder raised a bare ValueError
    # here, which stopped the writer on every restart).
    good = [event("copilot-odds", f"{i}-0", [odd(f"o{i}", ts=i)]) for i in range(1, 5)]
    bad = event("copilot-odds", "2-5", [odd("huge", price=1e39, ts=2)])
    metrics = Metrics()
    await write_batches(database_url, [*good[:2], bad, *good[2:]], metrics=metrics)
    ids = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    assert ids == {f"o{i}" for i in range(1, 5)}
    assert _samples(metrics, "ingestor_events_dropped_total") == [({"error": "ValueRefused"}, 1.0)]
    letter = await pg.fetchrow("SELECT * FROM dead_letters")
    assert letter["reason"] == "db_ValueRefused" and '"huge"' in letter["payload"]
    assert "out of range for real" in letter["detail"]
    assert await history_of(pg, "o3") != [] and await history_of(pg, "huge") == []


def _samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for m in metrics.registry.collect() for s in m.samples if s.name == name
    ]


async def test_a_settlement_first_seen_in_a_failed_flush_is_stored_with_its_retry(
    database_url: str, pg: Any
) -> None:
    # The flush fails on the refused row and is split; the settled odd's half commits. Its
    # settlement text must then be readable: the code for a new text is committed on its own,
    # never remembered from a transaction that rolled back.
    settled = event("copilot-settled-odds", "1-0", [settled_odd("s", ts=1, settlement="Abandoned")])
    bad = event("copilot-odds", "2-0", [odd("poison", ts=2)])
    bad.odds[0].league = "N\x00BA"  # PostgreSQL text refuses NUL: the whole flush fails
    await write_batches(database_url, [settled, bad])
    assert await pg.fetchval("SELECT settlement FROM odds_history WHERE id = 's'") == "Abandoned"
    assert await pg.fetchval("SELECT settlement FROM odds WHERE id = 's'") == "Abandoned"


def _settings(batch_max_rows: int) -> WriterSettings:
    return WriterSettings(writer_batch_max_rows=batch_max_rows, flush_retry_max_s=1)


def _entry(writer: Writer) -> str | None:
    cursor = writer.committed(GROUP)
    return cursor.entry_id if cursor else None


class _QuickLockWriter(Writer):
    lock_timeout_s = 2.0  # the cycle ends in seconds, not at the default 10
