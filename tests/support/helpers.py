"""Builders shared by the tests: decoded events from vendor-shaped payloads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ingestor.config import WriterSettings
from ingestor.domain.cursors import Cursor
from ingestor.domain.decode import decode_event
from ingestor.domain.events import DecodedEvent, EventQueue
from ingestor.metrics import Metrics
from ingestor.storage.db import Registered
from ingestor.storage.write import Writer

GROUP = "copilot:basketball:NBA"


def event(
    event_type: str,
    entry_id: str,
    odds: list[dict[str, Any]] | None = None,
    *,
    group: str = GROUP,
    stream: str = "copilot",
    payload: dict[str, Any] | None = None,
) -> DecodedEvent:
    """Decode a payload the way a worker would."""
    body = payload if payload is not None else {"entry_id": entry_id, "data": odds or []}
    return decode_event(group, stream, event_type, orjson.dumps(body), entry_id, datetime.now(UTC))


async def write_batches(
    database_url: str,
    *batches: list[DecodedEvent],
    metrics: Metrics | None = None,
    connections: int = 1,
) -> dict[str, Cursor]:
    """Run a real writer once per batch (each batch is one flush); returns committed cursors."""
    committed: dict[str, Cursor] = {}
    settings = WriterSettings(
        writer_batch_max_rows=1_000_000, flush_retry_max_s=1, writer_connections=connections
    )
    for batch in batches:
        queue: EventQueue = asyncio.Queue()
        for ev in batch:
            queue.put_nowait(ev)
        queue.put_nowait(None)
        registered = Registered(dict(committed), {})
        writer = Writer(database_url, queue, metrics or Metrics(), settings, registered=registered)
        await writer.run()
        assert writer.health().flushes >= 1
        for group in {e.group_key for e in batch}:
            cursor = writer.committed(group)
            if cursor is not None:
                committed[group] = cursor
    return committed


TABLES = {
    "odds",
    "odds_changes",
    "change_events",
    "history_marks",
    "settlements",
    "fixtures",
    "fixture_status_history",
    "stream_cursors",
    "dead_letters",
    "stream_gaps",
    "stream_gap_odds",
}


async def tables(url: str) -> set[str]:
    """The schema's tables (partitions and alembic's own left out)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
    finally:
        await conn.close()
    return {r["relname"] for r in rows} - {"alembic_version"}


async def partitions(pg: Any, table: str = "odds_changes") -> dict[str, int]:
    """A partitioned table's partitions and their row counts."""
    rows = await pg.fetch(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass",
        table,
    )
    return {r["name"]: await pg.fetchval(f"SELECT count(*) FROM {r['name']}") for r in rows}


async def odds_row(pg: Any, uid: str) -> Any:
    """The current row of one odd."""
    return await pg.fetchrow("SELECT * FROM odds WHERE id = $1", uid)


async def history_of(pg: Any, uid: str) -> list[tuple[str, str, float | None]]:
    """(kind, entry id, price) of one odd's history rows, in insertion order."""
    rows = await pg.fetch(
        "SELECT kind, entry_id, price FROM odds_history WHERE id = $1 ORDER BY received_at", uid
    )
    return [(r["kind"], r["entry_id"], r["price"]) for r in rows]
