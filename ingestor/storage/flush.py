"""What one flush runs on each of the writer's connections, inside their transactions.

The writer (``writer.py``) owns the queue, the batches, the retries and the commit order; this
module owns the statements: the history (packed rows, their events, the replay guard's marks),
the current state, fixtures, dead letters and cursors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from ingestor.domain.cursors import Cursor
from ingestor.domain.keys import SLOTS
from ingestor.errors import StartupError
from ingestor.metrics import Metrics
from ingestor.storage import sql
from ingestor.storage.batch import FlushBatch
from ingestor.storage.history import (
    CHANGE_COLUMNS,
    CHECKED_COLUMNS,
    EVENT_COLUMNS,
    HistoryEncoder,
)

SLOT_NS = 0x1C0E  # advisory lock "class" of writer slots (two-int form)
# Fixture ids known to have a row; past this many the set starts again (a probe each).
FIXTURES_KNOWN_MAX = 200_000
NewFixtures = Callable[[list[tuple[str, str]]], None]


class NoWriterSlot(StartupError):
    """Every writer slot of the database is taken."""


@dataclass(slots=True)
class Written:
    """What one connection's transaction wrote, published once every shard committed."""

    rows: dict[str, int]
    cursors: list[tuple[str, Cursor]]
    fixtures_ensured: list[str]
    fixtures_new: list[tuple[str, str]]


def _count(status: str) -> int:
    """Row count of an ``INSERT 0 n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


class Statements:
    """The statements of a flush, and the little state they keep between flushes."""

    def __init__(self, metrics: Metrics, encoder: HistoryEncoder) -> None:
        self._metrics = metrics
        self.encoder = encoder
        self.fixtures_known: set[str] = set()
        # Set while a flush waits on a long statement: the next batch may be built then.
        self.in_database = asyncio.Event()

    async def open_history(self, conn: asyncpg.Connection) -> None:
        """A new history connection: a writer slot, then what the encoder must know."""
        for slot in range(SLOTS):
            if await conn.fetchval(sql.TRY_LOCK_PAIR, SLOT_NS, slot):
                break
        else:
            raise NoWriterSlot(
                f"all {SLOTS} writer slots of this database are taken: at most {SLOTS} "
                "processes (writers) may write one database at once"
            )
        enc = self.encoder
        enc.slot = slot
        pending = set(enc.stale)
        enc.adopt_marks(await conn.fetch(sql.READ_MARKS), pending)
        enc.settlements.update({r[0]: r[1] for r in await conn.fetch(sql.READ_SETTLEMENTS)})
        for r in await conn.fetch(sql.READ_GROUPS):
            enc.group_numbers[r[0]] = r[1]

    async def ensure_groups(self, conn: asyncpg.Connection, batch: FlushBatch) -> None:
        """Give every group of the batch a number, outside the flush's transactions (the
        cursor connection upserts the same rows: inside, the two would wait for each other)."""
        known = self.encoder.group_numbers
        missing = {e.group_key for e in batch.history_events if e.group_key not in known}
        if missing:
            for r in await conn.fetch(sql.ENSURE_GROUPS, sorted(missing)):
                known[r[0]] = r[1]

    async def ensure_settlements(self, conn: asyncpg.Connection, batch: FlushBatch) -> None:
        """Codes for settlement texts not seen before, outside the flush's transactions like
        the group numbers: a code learnt inside one that rolled back would be remembered here
        while its row is gone, and the retry's rows would carry a code nothing names."""
        known = self.encoder.settlements
        texts = {r.settlement for e in batch.history_events for r in e.odds
                 if r.settlement is not None and r.settlement not in known}  # fmt: skip
        if texts:
            for r in await conn.fetch(sql.ADD_SETTLEMENTS, sorted(texts)):
                known[r[0]] = r[1]

    async def write(self, conn: asyncpg.Connection, batch: FlushBatch, attempt: int) -> Written:
        """This connection's share of the flush, in its open transaction."""
        written: dict[str, int] = {}
        if batch.history_events:
            written["odds_changes"] = await self._history(conn, batch, attempt)
        if batch.odds:
            await conn.copy_records_to_table(
                sql.STAGE_ODDS, records=batch.odds, columns=sql.ODDS_COLUMNS
            )
            self.in_database.set()  # the merge needs no Python: the next build may run
            written["odds"] = _count(await conn.execute(sql.MERGE_ODDS))
        if batch.fixture_history:
            await conn.copy_records_to_table(
                sql.STAGE_FIXTURE_HISTORY,
                records=batch.fixture_history,
                columns=sql.FIXTURE_HISTORY_COLUMNS,
            )
            written["fixture_status_history"] = _count(
                await conn.execute(sql.INSERT_FIXTURE_HISTORY)
            )
        if batch.fixtures:
            await conn.copy_records_to_table(
                sql.STAGE_FIXTURES, records=batch.fixtures, columns=sql.FIXTURE_COLUMNS
            )
            written["fixtures"] = _count(await conn.execute(sql.MERGE_FIXTURES))
        ensured, new_fixtures = await self._ensure_fixtures(conn, batch)
        if batch.dead_letters:
            await conn.copy_records_to_table(
                "dead_letters", records=batch.dead_letters, columns=sql.DEAD_LETTER_COLUMNS
            )
            written["dead_letters"] = len(batch.dead_letters)
        cursors = batch.cursors
        stored = (
            []
            if not cursors
            else await conn.fetch(
                sql.ADVANCE_CURSORS,
                [c.group_key for c in cursors],
                [c.entry_id for c in cursors],
                [c.event_id for c in cursors],
                [c.key for c in cursors],
                [c.event_at for c in cursors],
            )
        )
        # Published by the caller once every shard has committed, never before.
        cursors_stored = [
            (r["group_key"], Cursor(r["last_entry_id"], r["last_event_id"])) for r in stored
        ]
        return Written(written, cursors_stored, ensured, new_fixtures)

    def encode_ahead(self, batch: FlushBatch) -> None:
        """Encode a batch's history while the previous flush runs, when nothing the flush
        could learn first would change it (a slot, a group's number or mark)."""
        enc = self.encoder
        if enc.slot is None or enc.stale or enc.any_careful() or batch.history is not None:
            return  # the flush would encode it again (and the ahead pass raised the marks)
        if all(e.group_key in enc.group_numbers for e in batch.history_events):
            batch.history = enc.encode(batch.history_events)

    async def _history(self, conn: asyncpg.Connection, batch: FlushBatch, attempt: int) -> int:
        """Rows that cannot be stored yet go straight in; the rest is checked (history.py).

        Encoded with the connection's slot (ahead of time, or now): a retry (``attempt``)
        checks every row, because its history may have committed before the cursor's failed."""
        enc = self.encoder
        if enc.stale:  # groups taken over: another process may have moved their marks
            pending = set(enc.stale)
            enc.adopt_marks(await conn.fetch(sql.READ_MARKS), pending)
        h = batch.history
        if attempt > 0 or h is None or h.slot != enc.slot or enc.any_careful():
            h = enc.encode(batch.history_events, check_all=attempt > 0)
        batch.history = None  # used once: a retry encodes again
        for record, text in h.unsettled:  # encoded ahead, before ensure_settlements ran
            record[5] = enc.settlements[text]
        added = 0
        if h.changes:
            await conn.copy_records_to_table(
                sql.ODDS_CHANGES, records=h.changes, columns=CHANGE_COLUMNS
            )
            await conn.copy_records_to_table(
                sql.CHANGE_EVENTS, records=h.events, columns=EVENT_COLUMNS
            )
            added += len(h.changes)
        if h.checked_changes:
            await conn.copy_records_to_table(
                sql.STAGE_CHANGES, records=h.checked_changes, columns=CHECKED_COLUMNS
            )
            await conn.copy_records_to_table(
                sql.STAGE_EVENTS, records=h.checked_events, columns=EVENT_COLUMNS
            )
            added += int(await conn.fetchval(sql.INSERT_CHECKED))
            self._metrics.history_checked.inc(len(h.checked_changes))
        if h.marks:
            await conn.execute(sql.ADVANCE_MARKS, list(h.marks), list(h.marks.values()))
        return added

    async def _ensure_fixtures(
        self, conn: asyncpg.Connection, batch: FlushBatch
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """A row for every odd's fixture not known to exist; (ids ensured, (stream, id) of the
        fixtures seen for the first time)."""
        known = self.fixtures_known
        stubs = [s for f, s in batch.fixture_stubs.items() if f not in known]
        if not stubs:
            return [], []
        rows = await conn.fetch(
            sql.ENSURE_FIXTURES,
            [s.fixture_id for s in stubs], [s.game_id for s in stubs], [s.sport for s in stubs],
            [s.league for s in stubs], [s.source_ts for s in stubs], [s.entry_id for s in stubs],
        )  # fmt: skip
        new = {r["fixture_id"] for r in rows}
        return [s.fixture_id for s in stubs], [
            (s.stream, s.fixture_id) for s in stubs if s.fixture_id in new
        ]

    def fixtures_committed(self, ensured: list[str]) -> None:
        """Remember fixtures known to have a row (bounded)."""
        if len(self.fixtures_known) > FIXTURES_KNOWN_MAX:
            self.fixtures_known.clear()  # forgetting costs one ON CONFLICT probe each
        self.fixtures_known.update(ensured)
