"""History partitions: days created ahead, old days dropped, the default partition kept small."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ingestor.config import WriterSettings
from ingestor.domain.events import EventQueue
from ingestor.metrics import Metrics
from ingestor.storage.partitions import maintain, partition_name
from ingestor.storage.write import Writer
from tests.conftest import wait_until
from tests.support.fakefeed import odd
from tests.support.helpers import GROUP, event, partitions, write_batches
from tests.support.sim import history_invariants

D = date(2026, 3, 10)


def _ts(day: date, hour: int = 12) -> float:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()


async def test_retention_drops_old_days_and_keeps_new_ones(database_url: str, pg: Any) -> None:
    made = await maintain(pg, today=D, ahead_days=7, retention_days=30)
    assert partition_name("odds_changes", D) in made["created"]
    assert partition_name("fixture_status_history", D + timedelta(days=7)) in made["created"]
    old, today, later = D - timedelta(days=20), D, D + timedelta(days=10)
    await write_batches(
        database_url,
        [
            event("copilot-odds", f"{int(_ts(old)) * 1000}-0", [odd("a", ts=_ts(old))]),
            event("copilot-odds", f"{int(_ts(old)) * 1000}-1", [odd("d", ts=_ts(old))]),
            event("copilot-odds", f"{int(_ts(today)) * 1000}-0", [odd("b", ts=_ts(today))]),
            event("copilot-odds", f"{int(_ts(later)) * 1000}-0", [odd("c", ts=_ts(later))]),
            event("copilot-odds", f"{int(_ts(later)) * 1000}-1", [odd("a", ts=_ts(later))]),
        ],
    )
    parts = await partitions(pg)
    assert parts["odds_changes_default"] == 4  # 20 days old, and 10 days ahead (not made yet)
    assert parts[partition_name("odds_changes", today)] == 1

    # Five days on: the day 10 ahead gets its partition, and its rows move out of the default.
    await maintain(pg, today=D + timedelta(days=5), ahead_days=7, retention_days=30)
    parts = await partitions(pg)
    assert parts[partition_name("odds_changes", later)] == 2
    assert parts["odds_changes_default"] == 2

    # Thirty-five days on: D falls out of the retention, the old default rows too, but for
    # the rows that still explain an odd's current state (its newest change): b's moves to the
    # default partition with its day dropped, d's stays there; a's old row goes (a changed
    # since).
    result = await maintain(pg, today=D + timedelta(days=35), ahead_days=7, retention_days=30)
    parts = await partitions(pg)
    assert partition_name("odds_changes", today) in result["dropped"]
    assert partition_name("odds_changes", today) not in parts
    assert parts[partition_name("odds_changes", later)] == 2  # younger than 30 days: kept
    assert parts["odds_changes_default"] == 2
    assert partition_name("odds_changes", D + timedelta(days=42)) in parts
    rows = await pg.fetch("SELECT id, source_ts, entry_id FROM odds_history ORDER BY id")
    assert [(r["id"], r["source_ts"].date()) for r in rows] == [
        ("a", later),
        ("b", today),
        ("c", later),
        ("d", old),
    ]
    assert all(r["entry_id"] for r in rows)  # their events are kept with them
    # The current state is not history: every odd is still in `odds`, each explained.
    assert await pg.fetchval("SELECT count(*) FROM odds") == 4
    assert await history_invariants(pg) == []
    # The events were received today: once today's change_events partition is past the
    # retention too, the events the kept rows point at move to the default partition.
    received = datetime.now(UTC).date()
    await maintain(pg, today=received, ahead_days=1, retention_days=30)  # its day exists
    result = await maintain(
        pg, today=received + timedelta(days=40), ahead_days=1, retention_days=30
    )
    assert partition_name("change_events", received) in result["dropped"]
    rows = await pg.fetch("SELECT id, entry_id FROM odds_history ORDER BY id")
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"] and all(r["entry_id"] for r in rows)
    assert await history_invariants(pg) == []


async def test_replays_across_partitions_add_nothing(database_url: str, pg: Any) -> None:
    await maintain(pg, today=D, ahead_days=2, retention_days=30)
    ev = [event("copilot-odds", f"{int(_ts(D)) * 1000}-0", [odd("r", ts=_ts(D))])]
    await write_batches(database_url, ev, ev)
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 1


async def test_upkeep_never_leaves_the_writer_waiting_on_it(database_url: str, pg: Any) -> None:
    """The writer's current-state connection holds its tables while it waits, in Python, for
    the history connection; upkeep that held odds_history while it waited for those tables
    closed a cycle PostgreSQL cannot see (a flush hung until flush_timeout_s)."""
    current = await asyncpg.connect(database_url)  # the writer's current-state connection
    upkeep = await asyncpg.connect(database_url)
    queue: EventQueue = asyncio.Queue()
    settings = WriterSettings(writer_batch_max_rows=1000, flush_retry_max_s=1)
    writer = Writer(database_url, queue, Metrics(), settings)
    running = asyncio.create_task(writer.run())
    entry = [f"{int(_ts(D)) * 1000 + i}-0" for i in range(2)]
    queue.put_nowait(event("copilot-odds", entry[0], [odd("h", ts=_ts(D))]))
    await wait_until(lambda: _entry(writer) == entry[0])
    tx = current.transaction()
    await tx.start()
    await current.execute("LOCK TABLE fixture_status_history IN ROW EXCLUSIVE MODE")
    pid = upkeep.get_server_pid()
    task = asyncio.create_task(
        maintain(upkeep, today=D, ahead_days=1, retention_days=30, lock_timeout_s=60)
    )
    try:
        await wait_until(
            lambda: pg.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid)
        )
        # The history connection writes now: it must not queue behind the upkeep.
        queue.put_nowait(event("copilot-odds", entry[1], [odd("h", ts=_ts(D) + 1)]))
        await wait_until(lambda: _entry(writer) == entry[1], timeout_s=30)
        assert not task.done()  # committed while the upkeep still waits: not behind it
        await tx.rollback()
        made = await asyncio.wait_for(task, 30)  # the table is free: the upkeep goes on
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        queue.put_nowait(None)
        await running
        await current.close()
        await upkeep.close()
    assert len(made["created"]) == 6  # two days of three tables
    assert (await partitions(pg))[partition_name("odds_changes", D)] == 2


async def test_upkeep_gives_up_on_a_busy_table_and_keeps_what_it_did(
    database_url: str, pg: Any
) -> None:
    busy = await asyncpg.connect(database_url)
    tx = busy.transaction()
    await tx.start()
    await busy.execute("LOCK TABLE fixture_status_history IN ROW EXCLUSIVE MODE")
    try:
        with pytest.raises(asyncpg.LockNotAvailableError):
            await maintain(pg, today=D, ahead_days=1, retention_days=30, lock_timeout_s=0.2)
        assert partition_name("odds_changes", D + timedelta(days=1)) in await partitions(pg)
        # It let go of the upkeep lock: another process can take it.
        taken = "SELECT pg_try_advisory_lock(hashtext('ingestor-partitions'))"
        assert await busy.fetchval(taken)
        await busy.execute("SELECT pg_advisory_unlock(hashtext('ingestor-partitions'))")
    finally:
        await tx.rollback()
        await busy.close()
    made = await maintain(pg, today=D, ahead_days=1, retention_days=30)
    assert made["created"] == [
        partition_name("fixture_status_history", D),
        partition_name("fixture_status_history", D + timedelta(days=1)),
    ]


def _entry(writer: Writer) -> str | None:
    cursor = writer.committed(GROUP)
    return cursor.entry_id if cursor else None
