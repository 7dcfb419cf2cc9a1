"""What one flush runs on each of the writer's connections: the statements, and nothing else.

Stateless: each function takes what it needs and returns what the database told it; the
writer (``writer.py``) keeps what is worth remembering in its ``WriteState``. The SQL itself
is in ``storage/sql.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingestor.domain.cursors import Cursor
from ingestor.domain.events import GapStart
from ingestor.errors import StartupError
from ingestor.storage import sql
from ingestor.storage.write import pgcopy
from ingestor.storage.write.batch import FlushBatch, current_payload
from ingestor.storage.write.history import (
    CHANGE_COLUMNS,
    CHECKED_COLUMNS,
    EVENT_COLUMNS,
    SLOTS,
    HistoryBatch,
    changes_payload,
)
from ingestor.storage.write.state import Known

SLOT_NS = 0x1C0E  # advisory lock "class" of writer slots (two-int form)


class NoWriterSlot(StartupError):
    """Every writer slot of the database is taken."""


class Fenced(Exception):
    """Groups whose epoch moved on since their events were read: another process owns them
    now, so this transaction must not commit a row of theirs. (group key, stale epoch)."""

    def __init__(self, stale: set[tuple[str, int]]) -> None:
        super().__init__(", ".join(f"{g} (epoch {e})" for g, e in sorted(stale)))
        self.stale = stale


class ValueRefused(Exception):
    """A value PostgreSQL's column cannot hold (a price beyond real, say), found while the
    COPY was encoded: the writer drops its event alone, as it does a row PostgreSQL refuses."""


@dataclass(frozen=True, slots=True)
class Layout:
    """A binary COPY target: its table, its columns and their type letters (pgcopy.py)."""

    table: str
    columns: tuple[str, ...]
    codes: str

    @classmethod
    def of(cls, table: str, columns: Sequence[str], types: Mapping[str, str]) -> Layout:
        return cls(table, tuple(columns), pgcopy.codes([types[c] for c in columns]))


CHANGES = Layout.of(sql.ODDS_CHANGES, CHANGE_COLUMNS, sql.ODDS_CHANGES_TYPES)
EVENTS = Layout.of(sql.CHANGE_EVENTS, EVENT_COLUMNS, sql.CHANGE_EVENTS_TYPES)
CHECKED_CHANGES = Layout.of(sql.STAGE_CHANGES, CHECKED_COLUMNS, sql.STAGE_CHANGES_TYPES)
CHECKED_EVENTS = Layout.of(sql.STAGE_EVENTS, EVENT_COLUMNS, sql.CHANGE_EVENTS_TYPES)
ODDS = Layout.of(sql.STAGE_ODDS, sql.ODDS_COLUMNS, sql.ODDS_TYPES)
LAYOUTS = (CHANGES, EVENTS, CHECKED_CHANGES, CHECKED_EVENTS, ODDS)


async def copy(
    conn: asyncpg.Connection, layout: Layout, records: Sequence[Sequence[object]]
) -> None:
    """Binary COPY of ``records``, encoded here (pgcopy.py) instead of by asyncpg's codecs."""
    await copy_encoded(conn, layout, lambda: pgcopy.payload(records, layout.codes))


async def copy_encoded(
    conn: asyncpg.Connection, layout: Layout, encode: Callable[[], bytes]
) -> None:
    """Binary COPY of what ``encode`` writes; a value it refuses is the feed's (ValueRefused)."""
    try:
        data = encode()
    except ValueError as exc:
        raise ValueRefused(f"{layout.table}: {exc}") from exc
    await conn.copy_to_table(
        layout.table, source=_once(data), columns=list(layout.columns), format="binary"
    )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass(slots=True)
class Written:
    """What one connection's transaction wrote, published once every shard committed."""

    rows: dict[str, int]
    cursors: list[tuple[str, Cursor]]
    fixtures_ensured: list[str]
    fixtures_new: list[tuple[str, str]]
    history_checked: int = 0


def _count(status: str) -> int:
    """Row count of an ``INSERT 0 n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


async def take_slot(conn: asyncpg.Connection) -> int:
    """A writer slot for a new history connection (a session lock: it lasts as long as the
    connection); ``NoWriterSlot`` when all are taken."""
    for slot in range(SLOTS):
        if await conn.fetchval(sql.TRY_LOCK_PAIR, SLOT_NS, slot):
            return slot
    raise NoWriterSlot(
        f"all {SLOTS} writer slots of this database are taken: at most {SLOTS} "
        "processes (writers) may write one database at once"
    )


async def read_known(conn: asyncpg.Connection) -> Known:
    """The marks, settlement codes and group numbers the database holds."""
    marks = [(r[0], r[1]) for r in await conn.fetch(sql.READ_MARKS)]
    settlements = {r[0]: r[1] for r in await conn.fetch(sql.READ_SETTLEMENTS)}
    groups = {r[0]: r[1] for r in await conn.fetch(sql.READ_GROUPS)}
    return Known(marks, settlements, groups)


async def read_marks(conn: asyncpg.Connection) -> list[tuple[int, int]]:
    """Every group's mark as ``history_marks`` holds it now."""
    return [(r[0], r[1]) for r in await conn.fetch(sql.READ_MARKS)]


async def ensure_groups(conn: asyncpg.Connection, group_keys: set[str]) -> dict[str, int]:
    """A number for every one of these groups, outside the flush's transactions (the cursor
    connection upserts the same rows: inside, the two would wait for each other)."""
    return {r[0]: r[1] for r in await conn.fetch(sql.ENSURE_GROUPS, sorted(group_keys))}


async def ensure_settlements(conn: asyncpg.Connection, texts: set[str]) -> dict[str, int]:
    """Codes for settlement texts not seen before, outside the flush's transactions like the
    group numbers: a code learnt inside one that rolled back would be remembered while its
    row is gone, and the retry's rows would carry a code nothing names."""
    return {r[0]: r[1] for r in await conn.fetch(sql.ADD_SETTLEMENTS, sorted(texts))}


async def fence(conn: asyncpg.Connection, epochs: set[tuple[str, int]]) -> None:
    """In an open transaction: raise ``Fenced`` unless every (group, epoch) is the group's
    epoch now; the rows read stay locked until the commit, so no claim slips in between."""
    if not epochs:
        return
    now = {r[0]: r[1] for r in await conn.fetch(sql.FENCE, sorted({g for g, _ in epochs}))}
    stale = {(g, e) for g, e in epochs if now.get(g, 0) != e}
    if stale:
        raise Fenced(stale)


async def read_cursors(conn: asyncpg.Connection, group_keys: list[str]) -> dict[str, Cursor]:
    """The cursors the database holds for these groups."""
    rows = await conn.fetch(sql.READ_CURSORS, group_keys)
    return {r[0]: Cursor(r[1], r[2]) for r in rows if r[1]}


async def open_gap(
    conn: asyncpg.Connection, group_key: str, cause: str, bounds: tuple[datetime, datetime]
) -> int:
    """A gap in the ledger (autocommitted: it must outlive whatever fails next)."""
    return int(await conn.fetchval(sql.OPEN_GAP, group_key, cause, *bounds, None, None))


async def write(
    conn: asyncpg.Connection,
    batch: FlushBatch,
    history: HistoryBatch | None,
    fixtures_known: AbstractSet[str],
    in_database: Callable[[], None],
) -> Written:
    """This connection's share of the flush, in its open transaction (fenced already).
    ``in_database`` is called while PostgreSQL merges (no Python needed there: the next batch
    may be built)."""
    written = Written({}, [], [], [])
    if history is not None:
        written.rows["odds_changes"], written.history_checked = await _history(conn, history)
    if batch.odds:
        odds = batch.odds
        await copy_encoded(conn, ODDS, lambda: current_payload(odds, ODDS.codes))
        in_database()
        written.rows["odds"] = _count(await conn.execute(sql.MERGE_ODDS))
    if batch.fixture_history:
        await conn.copy_records_to_table(
            sql.STAGE_FIXTURE_HISTORY,
            records=batch.fixture_history,
            columns=sql.FIXTURE_HISTORY_COLUMNS,
        )
        written.rows["fixture_status_history"] = _count(
            await conn.execute(sql.INSERT_FIXTURE_HISTORY)
        )
    if batch.fixtures:
        await conn.copy_records_to_table(
            sql.STAGE_FIXTURES, records=batch.fixtures, columns=sql.FIXTURE_COLUMNS
        )
        written.rows["fixtures"] = _count(await conn.execute(sql.MERGE_FIXTURES))
    await _ensure_fixtures(conn, batch, fixtures_known, written)
    if batch.dead_letters:
        await conn.copy_records_to_table(
            "dead_letters", records=batch.dead_letters, columns=sql.DEAD_LETTER_COLUMNS
        )
        written.rows["dead_letters"] = len(batch.dead_letters)
    if batch.gaps:
        await record_gaps(conn, batch.gaps)
    if batch.cursors:
        cursors = batch.cursors
        stored = await conn.fetch(
            sql.ADVANCE_CURSORS,
            [c.group_key for c in cursors],
            [c.entry_id for c in cursors],
            [c.event_id for c in cursors],
            [c.key for c in cursors],
            [c.event_at for c in cursors],
        )
        # Published by the writer once every shard has committed, never before.
        written.cursors = [
            (r["group_key"], Cursor(r["last_entry_id"], r["last_event_id"])) for r in stored
        ]
    return written


async def _history(conn: asyncpg.Connection, h: HistoryBatch) -> tuple[int, int]:
    """Rows that cannot be stored yet go straight in; the rest is checked (history.py).
    Returns the rows added and the rows checked."""
    added = 0
    if h.changes:
        await copy_encoded(conn, CHANGES, lambda: changes_payload(h, CHANGES.codes))
        await copy(conn, EVENTS, h.events)
        added += h.change_rows
    if h.checked_changes:
        await copy(conn, CHECKED_CHANGES, h.checked_changes)
        await copy(conn, CHECKED_EVENTS, h.checked_events)
        if h.repaired:
            await conn.execute(sql.DROP_GUESSES)
        added += int(await conn.fetchval(sql.INSERT_CHECKED))
    if h.marks:
        await conn.execute(sql.ADVANCE_MARKS, list(h.marks), list(h.marks.values()))
    return added, len(h.checked_changes)


async def _ensure_fixtures(
    conn: asyncpg.Connection, batch: FlushBatch, known: AbstractSet[str], written: Written
) -> None:
    """A row for every odd's fixture not known to exist: the ids ensured, and (stream, id)
    of the fixtures seen for the first time."""
    stubs = [s for f, s in batch.fixture_stubs.items() if f not in known]
    if not stubs:
        return
    rows = await conn.fetch(
        sql.ENSURE_FIXTURES,
        [s.fixture_id for s in stubs],
        [s.game_id for s in stubs],
        [s.sport for s in stubs],
        [s.league for s in stubs],
        [s.source_ts for s in stubs],
        [s.entry_id for s in stubs],
    )
    new = {r["fixture_id"] for r in rows}
    written.fixtures_ensured = [s.fixture_id for s in stubs]
    written.fixtures_new = [(s.stream, s.fixture_id) for s in stubs if s.fixture_id in new]


async def record_gaps(conn: asyncpg.Connection, gaps: Sequence[tuple[str, GapStart]]) -> None:
    """The gaps (group, gap) of connections whose first events commit here (RECORD_GAPS)."""
    await conn.execute(
        sql.RECORD_GAPS,
        [group for group, _ in gaps],
        [g.cause for _, g in gaps],
        [g.from_ts for _, g in gaps],
        [g.until_ts for _, g in gaps],
        [g.opened_by for _, g in gaps],
        [g.unrepairable for _, g in gaps],
    )


async def record_dropped(
    conn: asyncpg.Connection, record: tuple[object, ...], gaps: Sequence[tuple[str, GapStart]]
) -> None:
    """A dead letter for an event PostgreSQL refused even alone, and the gaps it carried (the
    connection's later events move the cursor past them): one transaction of its own."""
    async with conn.transaction():
        await conn.copy_records_to_table(
            "dead_letters", records=[record], columns=sql.DEAD_LETTER_COLUMNS
        )
        if gaps:
            await record_gaps(conn, gaps)
