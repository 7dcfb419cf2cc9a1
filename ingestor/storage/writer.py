"""The single writer: drains the queue into one transaction per batch, retrying until it lands."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog

from ingestor.domain.cursors import Cursor, Cursors
from ingestor.domain.events import DecodedEvent, EventQueue
from ingestor.metrics import Metrics
from ingestor.storage import sql
from ingestor.storage.batch import FlushBatch, build_batches
from ingestor.storage.failures import CONNECTION_FAILURES

log = structlog.get_logger("ingestor.writer")

# What PostgreSQL says of rows it refuses: retrying the same rows cannot cure it, so the
# batch is split to find the one bad event. Only errors of the data: a TypeError or
# ValueError while building or encoding a batch is a bug of ours, and a bug must stop the
# writer (and the process) loudly, never file good events as dead letters one by one.
POISON = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
# Errors after which the same batch is tried again on a fresh connection.
RETRYABLE = CONNECTION_FAILURES

# After a replay met stored history rows, this many flushes take the ON CONFLICT path
# straight away: replays come in bursts, and each failed COPY costs a COPY.
STAGED_FLUSHES_AFTER_REPLAY = 20
# A flush's connections wait for each other in Python, where PostgreSQL's deadlock detector
# cannot see it: another session that holds what one connection wants and waits for what the
# other holds closes a cycle. A lock wait this long fails the flush, which rolls back (freeing
# the other session) and is retried, instead of hanging until flush_timeout_s.
LOCK_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Written:
    """What one connection's transaction wrote, published once every shard committed."""

    rows: dict[str, int]
    cursors: list[tuple[str, Cursor]]
    fixtures_ensured: list[str]
    fixtures_new: list[tuple[str, str]]


# Fixture ids known to have a row; past this many the set starts again (a probe each).
FIXTURES_KNOWN_MAX = 200_000
NewFixtures = Callable[[list[tuple[str, str]]], None]


def _count(status: str) -> int:
    """Row count of an ``INSERT 0 n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


class Writer:
    """Consumes decoded events; ``None`` on the queue means: flush what came before, then stop."""

    def __init__(
        self,
        dsn: str,
        queue: EventQueue,
        metrics: Metrics,
        *,
        batch_max_rows: int,
        retry_max_s: float,
        cursors: Cursors | None = None,
        flush_timeout_s: float = 60.0,
        connections: int = 1,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        on_new_fixtures: NewFixtures | None = None,
    ) -> None:
        self._dsn = dsn
        self.queue = queue
        self._metrics = metrics
        self._batch_max_rows = batch_max_rows
        self._retry_max_s = retry_max_s
        self._flush_timeout_s = flush_timeout_s
        self._lock_timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
        # Several connections let PostgreSQL use several cores for one flush: the history on
        # one, the current state (sharded by odd id) on the others.
        self._conns: list[asyncpg.Connection | None] = [None] * connections
        # Advanced here, after each commit; workers read it when they reconnect.
        self.cursors = cursors if cursors is not None else Cursors()
        self._fixtures_known: set[str] = set()
        # Told (stream, fixture id) of fixtures first seen, after their commit: their names,
        # start time and status are then asked for over REST.
        self._on_new_fixtures = on_new_fixtures
        self.flushes = 0
        self._staged_flushes_left = 0
        # Set while a flush waits on a long statement: the next batch may be built then.
        self._in_database = asyncio.Event()
        # Events taken from the queue and not yet committed (or dropped), and since when
        # some have waited: what /readyz and ingestor_events_pending tell the operator.
        self.held = 0
        self._busy_since = self._last_commit = time.monotonic()
        self.last_error: str | None = None
        metrics.queue_depth.set_function(queue.qsize)
        metrics.events_pending.set_function(lambda: queue.qsize() + self.held)
        metrics.last_commit.set(time.time())

    def stall_s(self) -> float:
        """Seconds events have been held without any commit; 0 while none is held."""
        if not self.held:
            return 0.0
        return time.monotonic() - max(self._last_commit, self._busy_since)

    def _hold(self, events: int) -> None:
        if not self.held:
            self._busy_since = time.monotonic()
        self.held += events

    async def run(self) -> None:
        """Flush as soon as the previous flush returned; no linger, capped at the row limit.

        While one flush runs in PostgreSQL, the next full batch is built (pipelining)."""
        pending: asyncio.Task[None] | None = None
        try:
            stop = False
            while not stop:
                if pending is not None and self.queue.empty():
                    await pending  # nothing to prepare meanwhile; its errors surface here
                    pending = None
                first = await self.queue.get()
                if first is None:
                    break
                self._hold(1)
                events = [first]
                rows, stop = self._take_more(events, first.row_count)
                if pending is not None and rows < self._batch_max_rows and not stop:
                    # Not full: keep gathering while the flush runs, as an unpipelined
                    # writer would, so that batches stay large at moderate rates.
                    await pending
                    pending = None
                    rows, stop = self._take_more(events, rows)
                batches = await self._prepare(events, pending)
                if pending is not None:
                    await pending  # commits stay in order: a cursor never runs ahead
                self._in_database.clear()
                pending = asyncio.create_task(self._flush(events, batches), name="writer-flush")
            if pending is not None:
                await pending
        finally:
            try:
                if pending is not None and not pending.done():
                    pending.cancel()
                    await asyncio.wait([pending], timeout=5)
            finally:
                await self._close()

    async def _prepare(
        self, events: list[DecodedEvent], pending: asyncio.Task[None] | None
    ) -> list[FlushBatch]:
        """Build the batches; with a flush running, only once it waits on PostgreSQL."""
        if pending is not None:
            # Building holds the event loop for 15-30 ms; done while the previous flush's
            # merge runs (no Python needed there), it overlaps PostgreSQL's work instead of
            # adding to it.
            waiter = asyncio.ensure_future(self._in_database.wait())
            try:
                await asyncio.wait([waiter, pending], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        return build_batches(events, len(self._conns))

    def _take_more(self, events: list[DecodedEvent], rows: int) -> tuple[int, bool]:
        """Append queued events up to the row cap; True when the stop marker came."""
        stop = False
        taken = len(events)
        while rows < self._batch_max_rows:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is None:
                stop = True
                break
            events.append(item)
            rows += item.row_count
        self._hold(len(events) - taken)
        return rows, stop

    async def _connect(self, i: int) -> asyncpg.Connection:
        current = self._conns[i]
        if current is None or current.is_closed():
            conn = await asyncpg.connect(
                self._dsn,
                timeout=10,
                command_timeout=self._flush_timeout_s,
                server_settings={
                    "application_name": "ingestor-writer",
                    "jit": "off",
                    "lock_timeout": self._lock_timeout,
                    # Server-side: PostgreSQL drops the session (and its locks) of a writer
                    # that vanished. A database that stops answering is flush_timeout_s's job.
                    "tcp_keepalives_idle": "10",
                    "tcp_keepalives_interval": "5",
                    "tcp_keepalives_count": "3",
                },
            )
            try:
                await conn.execute(sql.CREATE_STAGING)
            except BaseException:
                await conn.close()
                raise
            self._conns[i] = current = conn
        return current

    async def _close(self) -> None:
        for i, conn in enumerate(self._conns):
            if conn is None:
                continue
            self._conns[i] = None
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except RETRYABLE:
                conn.terminate()
            except asyncio.CancelledError:
                conn.terminate()
                raise

    async def _flush(self, events: list[DecodedEvent], batches: list[FlushBatch] | None) -> None:
        """Commit these events (bisecting a bad one out), then stop holding them."""
        await self._flush_until_committed(events, batches)
        self.held -= len(events)

    async def _flush_until_committed(
        self, events: list[DecodedEvent], batches: list[FlushBatch] | None = None
    ) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                if batches is None:
                    batches = build_batches(events, len(self._conns))
                async with asyncio.timeout(self._flush_timeout_s):
                    written = await self._write_shards(batches)
            except POISON as exc:
                # Checked before RETRYABLE: DataError is a PostgresError too.
                await self._split(events, exc)
                return
            except RETRYABLE as exc:
                attempt += 1
                delay = random.uniform(0, min(self._retry_max_s, 0.05 * 2**attempt))
                self.last_error = type(exc).__name__
                self._metrics.db_errors.labels(type(exc).__name__).inc()
                log.warning(
                    "flush_failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    events=len(events),
                )
                await self._close()
                await asyncio.sleep(delay)
                continue
            self._staged_flushes_left = max(0, self._staged_flushes_left - 1)
            self._after_commit(batches, written, time.perf_counter() - started, attempt)
            return

    async def _split(self, events: list[DecodedEvent], exc: BaseException) -> None:
        """Bisect a batch that cannot be written, so that one bad event costs only itself."""
        self._metrics.db_errors.labels(type(exc).__name__).inc()
        if len(events) > 1:
            mid = len(events) // 2
            await self._flush_until_committed(events[:mid])
            await self._flush_until_committed(events[mid:])
            return
        (bad,) = events
        self._metrics.events_dropped.labels(type(exc).__name__).inc()
        log.error(
            "event_dropped",
            group=bad.group_key,
            event_type=bad.event_type,
            entry_id=bad.entry_id,
            error=type(exc).__name__,
            detail=str(exc)[:300],
        )
        await self._record_dropped(bad, exc)

    async def _record_dropped(self, bad: DecodedEvent, exc: BaseException) -> None:
        """Keep a trace of the dropped event in dead_letters (best effort, own transaction)."""
        ids = [o.id for o in bad.odds][:50]
        payload = orjson.dumps({"entry_id": bad.entry_id, "odds": ids}).decode()
        record = (bad.group_key, bad.event_type, bad.event_id, f"db_{type(exc).__name__}",
                  str(exc)[:1000].replace("\x00", ""), payload, bad.received_at)  # fmt: skip
        try:
            async with asyncio.timeout(self._flush_timeout_s):
                conn = await self._connect(0)
                await conn.copy_records_to_table(
                    "dead_letters", records=[record], columns=sql.DEAD_LETTER_COLUMNS
                )
        except (*RETRYABLE, *POISON) as err:
            log.error("dead_letter_failed", error=type(err).__name__)

    async def _write_shards(self, batches: list[FlushBatch]) -> dict[str, int]:
        """One transaction per shard; the first (with the cursors) commits last, so a
        committed cursor never covers rows that are not committed. A failure after some
        shards committed is retried whole: every write is idempotent."""
        busy = [i for i, b in enumerate(batches) if i == 0 or b.odds_history or b.odds]
        conns = [await self._connect(i) for i in busy]
        txs = [conn.transaction() for conn in conns]
        try:
            for tx in txs:
                await tx.start()
            # gather without cancelling: every statement ends before any rollback starts.
            results = await asyncio.gather(
                *(self._write(conn, batches[i]) for conn, i in zip(conns, busy, strict=True)),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            for tx in txs[1:]:
                await tx.commit()
            await txs[0].commit()
        except Exception:
            # Bounded: a database that stopped answering must not hold the retry up. On
            # cancellation nothing is awaited here; the connections are closed instead.
            for tx in txs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(tx.rollback(), timeout=2)
            raise
        written: dict[str, int] = {}
        for result in results:
            assert not isinstance(result, BaseException)
            for table, n in result.rows.items():
                written[table] = written.get(table, 0) + n
            for group_key, cursor in result.cursors:
                self.cursors.advance(group_key, cursor)
            self._fixtures_committed(result)
        return written

    def _fixtures_committed(self, result: _Written) -> None:
        if len(self._fixtures_known) > FIXTURES_KNOWN_MAX:
            self._fixtures_known.clear()  # forgetting costs one ON CONFLICT probe each
        self._fixtures_known.update(result.fixtures_ensured)
        if result.fixtures_new and self._on_new_fixtures is not None:
            self._on_new_fixtures(result.fixtures_new)

    async def _write(self, conn: asyncpg.Connection, batch: FlushBatch) -> _Written:
        written: dict[str, int] = {}
        if batch.odds_history:
            written["odds_history"] = await self._write_history(conn, batch)
        if batch.odds:
            await conn.copy_records_to_table(
                sql.STAGE_ODDS, records=batch.odds, columns=sql.ODDS_COLUMNS
            )
            self._in_database.set()  # the merge needs no Python: the next build may run
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
        return _Written(written, cursors_stored, ensured, new_fixtures)

    async def _ensure_fixtures(
        self, conn: asyncpg.Connection, batch: FlushBatch
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """A row for every odd's fixture not known to exist; (ids ensured, (stream, id) of the
        fixtures seen for the first time)."""
        stubs = [s for f, s in batch.fixture_stubs.items() if f not in self._fixtures_known]
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

    async def _write_history(self, conn: asyncpg.Connection, batch: FlushBatch) -> int:
        """History rows: a plain COPY when it can be, else staging and ON CONFLICT DO NOTHING."""
        if batch.history_plain and not self._staged_flushes_left:
            # COPY cannot skip rows already stored, so it is tried under a savepoint and
            # undone whole if a replay hits the unique key. Measured: 1.7x the rows/s of
            # staging plus INSERT ... ON CONFLICT, which inserts row by row (speculatively).
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        sql.ODDS_HISTORY,
                        records=batch.odds_history,
                        columns=sql.ODDS_HISTORY_COLUMNS,
                    )
            except asyncpg.UniqueViolationError:
                self._staged_flushes_left = STAGED_FLUSHES_AFTER_REPLAY
                self._metrics.history_replays.inc()
            else:
                return len(batch.odds_history)
        await conn.copy_records_to_table(
            sql.STAGE_ODDS_HISTORY, records=batch.odds_history, columns=sql.ODDS_HISTORY_COLUMNS
        )
        return _count(await conn.execute(sql.INSERT_ODDS_HISTORY))

    def _after_commit(
        self, batches: list[FlushBatch], written: dict[str, int], seconds: float, attempts: int
    ) -> None:
        m = self._metrics
        self.flushes += 1
        self._last_commit = time.monotonic()
        self.last_error = None
        m.last_commit.set(time.time())
        m.flush_duration.observe(seconds)
        m.batch_rows.observe(sum(len(b.odds_history) for b in batches))
        for table, n in written.items():
            m.rows_written.labels(table).inc(n)
        now = datetime.now(UTC)
        for batch in batches:
            m.events_committed.inc(batch.stream_events)
            m.lag.observe_many(
                [(now - row.source_ts).total_seconds() for row in batch.streamed_odds]
            )
        log.debug(
            "batch_flushed",
            odds=sum(len(b.odds_history) for b in batches),
            shards=len(batches),
            seconds=round(seconds, 4),
            attempts=attempts + 1,
        )
