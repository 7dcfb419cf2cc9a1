"""The single writer: drains the queue into one transaction per batch, retrying until it lands."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog

from ingestor.domain.cursors import Cursors
from ingestor.domain.events import Barrier, DecodedEvent, EventQueue
from ingestor.metrics import Metrics
from ingestor.storage import sql
from ingestor.storage.batch import FlushBatch, build_batches
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded
from ingestor.storage.flush import NewFixtures, Statements, Written
from ingestor.storage.history import HistoryEncoder

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

# A flush's connections wait for each other in Python, where PostgreSQL's deadlock detector
# cannot see it: another session that holds what one connection wants and waits for what the
# other holds closes a cycle. A lock wait this long fails the flush, which rolls back (freeing
# the other session) and is retried, instead of hanging until flush_timeout_s.
LOCK_TIMEOUT_S = 10.0


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
        group_numbers: dict[str, int] | None = None,
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
        self._history_conn = connections - 1  # the last (the only one, with one)
        # Advanced here, after each commit; workers read it when they reconnect.
        self.cursors = cursors if cursors is not None else Cursors()
        # Told (stream, fixture id) of fixtures first seen, after their commit: their names,
        # start time and status are then asked for over REST.
        self._on_new_fixtures = on_new_fixtures
        self._statements = Statements(metrics, HistoryEncoder(dict(group_numbers or {}), {}))
        self._in_database = self._statements.in_database
        self.flushes = 0
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

    def handed_over(self, group_key: str, *, careful: bool) -> None:
        """The group was taken or given up: its mark is read again; ``careful``: another
        process may still write its history, so its rows are checked for a while."""
        self._statements.encoder.handed_over(group_key, careful=careful)

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
                if isinstance(first, Barrier):
                    if pending is not None:
                        await pending
                        pending = None
                    first.done.set()  # everything before it is committed
                    continue
                self._hold(1)
                events = [first]
                barriers: list[Barrier] = []
                rows, stop = self._take_more(events, first.row_count, barriers)
                if pending is not None and rows < self._batch_max_rows and not stop:
                    # Not full: keep gathering while the flush runs, as an unpipelined
                    # writer would, so that batches stay large at moderate rates.
                    await pending
                    pending = None
                    rows, stop = self._take_more(events, rows, barriers)
                batches = await self._prepare(events, pending)
                if pending is not None:
                    await pending  # commits stay in order: a cursor never runs ahead
                self._in_database.clear()
                pending = asyncio.create_task(
                    self._flush(events, batches, barriers), name="writer-flush"
                )
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
        batches = build_batches(events, len(self._conns))
        self._statements.encode_ahead(batches[-1])
        return batches

    def _take_more(
        self, events: list[DecodedEvent], rows: int, barriers: list[Barrier]
    ) -> tuple[int, bool]:
        """Append queued events up to the row cap; True when the stop marker came. Barriers
        met on the way are released when this batch commits (it holds all before them)."""
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
            if isinstance(item, Barrier):
                barriers.append(item)
                continue
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
                if i == self._history_conn:
                    await self._statements.open_history(conn)
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
            await close_bounded(conn)

    async def _flush(
        self, events: list[DecodedEvent], batches: list[FlushBatch] | None,
        barriers: list[Barrier],
    ) -> None:  # fmt: skip
        """Commit these events (bisecting a bad one out), then stop holding them."""
        await self._flush_until_committed(events, batches)
        self.held -= len(events)
        for barrier in barriers:
            barrier.done.set()

    async def flushed(self) -> None:
        """Until every event queued before this call is committed (or dropped)."""
        barrier = Barrier()
        await self.queue.put(barrier)
        await barrier.done.wait()

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
                    written = await self._write_shards(batches, attempt)
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
            self._after_commit(batches, written, time.perf_counter() - started, attempt)
            return

    async def _split(self, events: list[DecodedEvent], exc: BaseException) -> None:
        """Bisect a batch that cannot be written, so that one bad event costs only itself."""
        self._metrics.db_errors.labels(type(exc).__name__).inc()
        if len(events) > 1:
            mid = len(events) // 2
            # The halves' history is checked: their marks were raised by the failed attempt.
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

    async def _write_shards(self, batches: list[FlushBatch], attempt: int) -> dict[str, int]:
        """One transaction per shard; the first (with the cursors) commits last, so a
        committed cursor never covers rows that are not committed. A failure after some
        shards committed is retried whole: every write is idempotent (history checks every
        row of a retry)."""
        busy = [i for i, b in enumerate(batches) if i == 0 or b.history_events or b.odds]
        conns = [await self._connect(i) for i in busy]
        if batches[-1].history_events:
            await self._statements.ensure_groups(conns[-1], batches[-1])
            await self._statements.ensure_settlements(conns[-1], batches[-1])
        txs = [conn.transaction() for conn in conns]
        try:
            for tx in txs:
                await tx.start()
            # gather without cancelling: every statement ends before any rollback starts.
            statements = self._statements
            results = await asyncio.gather(
                *(
                    statements.write(c, batches[i], attempt)
                    for c, i in zip(conns, busy, strict=True)
                ),
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

    def _fixtures_committed(self, result: Written) -> None:
        self._statements.fixtures_committed(result.fixtures_ensured)
        if result.fixtures_new and self._on_new_fixtures is not None:
            self._on_new_fixtures(result.fixtures_new)

    def _after_commit(
        self, batches: list[FlushBatch], written: dict[str, int], seconds: float, attempts: int
    ) -> None:
        m = self._metrics
        self.flushes += 1
        self._last_commit = time.monotonic()
        self.last_error = None
        m.last_commit.set(time.time())
        m.flush_duration.observe(seconds)
        odds = sum(len(e.odds) for b in batches for e in b.history_events)
        m.batch_rows.observe(odds)
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
            odds=odds,
            shards=len(batches),
            seconds=round(seconds, 4),
            attempts=attempts + 1,
        )
