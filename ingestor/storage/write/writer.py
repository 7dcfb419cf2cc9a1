"""The single writer: drains the queue into one transaction per batch, retrying until it lands.

Its face, for the rest of the daemon (``ports.WritePath``): ``run``; ``take_over`` and
``give_back`` a group; ``close``; ``committed`` (a group's cursor, what workers resume from);
``health`` (a frozen snapshot for readiness and progress). Everything the write path remembers
lives in its ``WriteState``, which nothing else writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog

from ingestor.config import WriterSettings
from ingestor.domain.cursors import Cursor
from ingestor.domain.events import (
    FAR_PAST,
    Barrier,
    DecodedEvent,
    EventQueue,
    cursor_key,
    entry_time,
)
from ingestor.metrics import Metrics
from ingestor.ports import LostGroups, WriterHealth
from ingestor.storage import sql
from ingestor.storage.db import Registered
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded
from ingestor.storage.write import statements
from ingestor.storage.write.batch import FlushBatch, build_batches, lag_counts
from ingestor.storage.write.history import HistoryBatch, encode
from ingestor.storage.write.state import WriteState
from ingestor.storage.write.statements import Fenced, Written

log = structlog.get_logger("ingestor.writer")

# What PostgreSQL says of rows it refuses: retrying the same rows cannot cure it, so the
# batch is split to find the one bad event. Only errors of the data: a TypeError or
# ValueError while building or encoding a batch is a bug of ours, and a bug must stop the
# writer (and the process) loudly, never file good events as dead letters one by one.
POISON = (
    statements.ValueRefused,
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
# Told (stream, fixture id) of fixtures first seen, after their commit.
NewFixtures = Callable[[list[tuple[str, str]]], None]


class Writer:
    """Consumes decoded events until ``close``: flushes what came before, then stops."""

    lock_timeout_s = LOCK_TIMEOUT_S

    def __init__(
        self,
        dsn: str,
        queue: EventQueue,
        metrics: Metrics,
        settings: WriterSettings,
        *,
        registered: Registered | None = None,
        on_new_fixtures: NewFixtures | None = None,
        lost: LostGroups | None = None,
    ) -> None:
        self._dsn = dsn
        self._queue = queue
        self._metrics = metrics
        self._s = settings
        self._lock_timeout = f"{max(1, int(self.lock_timeout_s * 1000))}ms"
        # Several connections let PostgreSQL use several cores for one flush: the history on
        # one, the current state (sharded by odd id) on the others.
        self._conns: list[asyncpg.Connection | None] = [None] * settings.writer_connections
        self._history_conn = settings.writer_connections - 1  # the last (the only one, with one)
        registered = registered or Registered({}, {})
        self._state = WriteState(registered.group_numbers, registered.cursors)
        self._on_new_fixtures = on_new_fixtures
        # Groups a flush found fenced out (another process owns them now): told to whoever
        # gives them up (the coordinator).
        self._lost = lost
        # After a failure, the database may be another (a promoted standby): its cursors are
        # compared with what we committed before anything else is written.
        self._check_cursors = False
        # Set while a flush waits on a long statement: the next batch may be built then.
        self._in_database = asyncio.Event()
        self._flushes = 0
        # Events taken from the queue and not yet committed (or dropped), and since when
        # some have waited: what /readyz and ingestor_events_pending tell the operator.
        self._held = 0
        self._busy_since = self._last_commit = time.monotonic()
        self._last_error: str | None = None
        metrics.queue_depth.set_function(queue.qsize)
        metrics.events_pending.set_function(lambda: queue.qsize() + self._held)
        metrics.last_commit.set(time.time())

    # --- the face ---------------------------------------------------------------------------

    def committed(self, group_key: str) -> Cursor | None:
        """The group's committed cursor: what its worker resumes from."""
        return self._state.cursor(group_key)

    def take_over(self, group_key: str, cursor: Cursor | None, *, careful: bool = False) -> None:
        """This process now streams the group, from ``cursor`` (what the database holds); its
        mark is read again before it is written; ``careful``: another process streamed it
        until now, so its rows are checked for a while."""
        self._state.taken_over(group_key, cursor, careful=careful)

    async def give_back(self, group_key: str, *, drain_s: float | None) -> bool:
        """The group's worker stopped. ``drain_s``: wait that long at most until everything
        queued before is committed, so that the next owner starts after our last write.
        Returns whether that is so; when not, the group's rows are checked for a while."""
        drained = False
        if drain_s is not None:
            try:
                async with asyncio.timeout(drain_s):
                    await self.flushed()
                drained = True
            except TimeoutError:
                log.warning("group_drain_timeout", group=group_key, timeout_s=drain_s)
        # Not drained: our last events may land after the next owner's; check them.
        self._state.handed_over(group_key, careful=not drained)
        return drained

    async def close(self) -> None:
        """Ask ``run`` to flush everything queued so far, commit, and return."""
        await self._queue.put(None)

    async def flushed(self) -> None:
        """Until every event queued before this call is committed (or dropped)."""
        barrier = Barrier()
        await self._queue.put(barrier)
        await barrier.done.wait()

    def health(self) -> WriterHealth:
        """A frozen snapshot: what readiness and the progress line read."""
        stall = 0.0
        if self._held:
            stall = time.monotonic() - max(self._last_commit, self._busy_since)
        return WriterHealth(
            queued=self._queue.qsize(),
            held=self._held,
            stall_s=stall,
            last_error=self._last_error,
            flushes=self._flushes,
            committed_groups=self._state.committed_groups(),
        )

    # --- the loop ---------------------------------------------------------------------------

    def _hold(self, events: int) -> None:
        if not self._held:
            self._busy_since = time.monotonic()
        self._held += events

    async def run(self) -> None:
        """Flush as soon as the previous flush returned; no linger, capped at the row limit.

        While one flush runs in PostgreSQL, the next full batch is built (pipelining)."""
        pending: asyncio.Task[None] | None = None
        try:
            stop = False
            while not stop:
                if pending is not None and self._queue.empty():
                    await pending  # nothing to prepare meanwhile; its errors surface here
                    pending = None
                first = await self._queue.get()
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
                if pending is not None and rows < self._s.writer_batch_max_rows and not stop:
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
        self._encode_ahead(batches[-1])
        return batches

    def _encode_ahead(self, batch: FlushBatch) -> None:
        """Encode a batch's history while the previous flush runs, when nothing the flush
        could learn first would change it (a slot, a group's number or mark)."""
        state = self._state
        if state.slot is None or state.any_checked() or batch.history is not None:
            return  # the flush would encode it again (and the ahead pass raised the marks)
        if state.numbered(batch.groups):
            batch.history = self._encode(batch.history_events, check_all=False)

    def _encode(self, events: list[DecodedEvent], *, check_all: bool) -> HistoryBatch:
        h = encode(self._state.history_context(), events, check_all=check_all)
        self._state.encoded(h.marks, h.last_us, h.from_rest)
        return h

    def _take_more(
        self, events: list[DecodedEvent], rows: int, barriers: list[Barrier]
    ) -> tuple[int, bool]:
        """Append queued events up to the row cap; True when the stop marker came. Barriers
        met on the way are released when this batch commits (it holds all before them)."""
        stop = False
        taken = len(events)
        while rows < self._s.writer_batch_max_rows:
            try:
                item = self._queue.get_nowait()
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

    # --- connections ------------------------------------------------------------------------

    async def _connect(self, i: int) -> asyncpg.Connection:
        current = self._conns[i]
        if current is None or current.is_closed():
            conn = await asyncpg.connect(
                self._dsn,
                timeout=10,
                command_timeout=self._s.flush_timeout_s,
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
                    # A writer slot, then what the encoder must know.
                    slot = await statements.take_slot(conn)
                    self._state.opened(slot, await statements.read_known(conn))
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
            if i == self._history_conn:
                self._state.connection_lost()
            await close_bounded(conn)

    # --- one flush --------------------------------------------------------------------------

    async def _flush(
        self, events: list[DecodedEvent], batches: list[FlushBatch] | None, barriers: list[Barrier]
    ) -> None:
        """Commit these events (bisecting a bad one out), then stop holding them."""
        held = len(events)
        await self._flush_until_committed(events, batches)
        self._held -= held
        for barrier in barriers:
            barrier.done.set()

    async def _flush_until_committed(
        self, events: list[DecodedEvent], batches: list[FlushBatch] | None = None
    ) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                if batches is None:
                    batches = build_batches(events, len(self._conns))
                # Every (group, epoch) the events were read under: fenced in each transaction.
                epochs = batches[0].epochs
                async with asyncio.timeout(self._s.flush_timeout_s):
                    written = await self._write_shards(batches, attempt, epochs)
            except POISON as exc:
                # Checked before RETRYABLE: DataError is a PostgresError too.
                await self._split(events, exc)
                return
            except Fenced as exc:
                # Rolled back: the rest goes in without the fenced events (the group's owner
                # has them: it resumes from the cursor we did not move, and records the gap).
                self._fenced(events, exc.stale)
                attempt, batches = attempt + 1, None  # its marks were raised: check all
                if not events:
                    return
                continue
            except RETRYABLE as exc:
                attempt += 1
                await self._failed(exc, attempt, len(events))
                continue
            self._after_commit(batches, written, time.perf_counter() - started, attempt)
            return

    async def _failed(self, exc: BaseException, attempt: int, events: int) -> None:
        """A flush attempt failed: say so, drop the connections, back off."""
        delay = random.uniform(0, min(self._s.flush_retry_max_s, 0.05 * 2**attempt))
        self._last_error = type(exc).__name__
        self._metrics.db_errors.labels(type(exc).__name__).inc()
        log.warning(
            "flush_failed",
            error=type(exc).__name__,
            detail=str(exc)[:300],
            attempt=attempt,
            retry_in_s=round(delay, 3),
            events=events,
        )
        await self._close()
        self._state.flush_failed()
        self._check_cursors = True
        await asyncio.sleep(delay)

    def _fenced(self, events: list[DecodedEvent], stale: set[tuple[str, int]]) -> None:
        """Drop the events read under an epoch that is gone; tell who gives their groups up."""
        dropped = [e for e in events if (e.group_key, e.epoch) in stale]
        events[:] = [e for e in events if (e.group_key, e.epoch) not in stale]
        for group, epoch in sorted(stale):
            n = sum(1 for e in dropped if e.group_key == group)
            self._metrics.events_fenced.labels(group).inc(n)
            log.warning("group_fenced", group=group, epoch=epoch, events_dropped=n)
            if self._lost is not None:
                self._lost.report(group, epoch)

    async def _verify_cursors(self, conn: asyncpg.Connection) -> None:
        """After a failure: a group whose cursor the database holds behind what we committed
        lost commits (a failover to a standby that lagged). The stretch becomes a gap in the
        ledger (before anything moves the cursor again) and the group resumes from there."""
        ours = self._state.cursors()
        if not ours:
            return
        theirs = await statements.read_cursors(conn, sorted(ours))
        for group, cursor in sorted(ours.items()):
            held = theirs.get(group)
            if held is not None and cursor_key(held.entry_id) >= cursor_key(cursor.entry_id):
                continue
            start = entry_time(held.entry_id) if held is not None else FAR_PAST
            gap = await statements.open_gap(
                conn, group, "failover", (start, entry_time(cursor.entry_id))
            )
            self._state.rewound(group, held)
            self._metrics.gaps_opened.labels("failover").inc()
            log.warning(
                "commits_lost",
                group=group,
                committed=cursor.entry_id,
                database_has=held.entry_id if held else None,
                gap_id=gap,
            )

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
        detail = str(exc)[:1000].replace("\x00", "")
        reason = f"db_{type(exc).__name__}"
        record = (
            bad.group_key,
            bad.event_type,
            bad.event_id,
            reason,
            detail,
            payload,
            bad.received_at,
        )
        try:
            async with asyncio.timeout(self._s.flush_timeout_s):
                gaps = [(bad.group_key, gap) for gap in bad.gaps]
                await statements.record_dropped(await self._connect(0), record, gaps)
        except (*RETRYABLE, *POISON) as err:
            log.error("dead_letter_failed", error=type(err).__name__)

    def _history(self, batch: FlushBatch, attempt: int) -> HistoryBatch | None:
        """The batch's history, encoded with the connection's slot (ahead of time, or now):
        a retry (``attempt``) checks every row, because its history may have committed before
        the cursor's failed."""
        if not batch.history_events:
            return None
        state = self._state
        h, batch.history = batch.history, None  # used once: a retry encodes again
        if attempt > 0 or h is None or h.slot != state.slot or state.any_checked():
            h = self._encode(batch.history_events, check_all=attempt > 0)
        return h

    async def _settle(self, conn: asyncpg.Connection, h: HistoryBatch) -> None:
        """Codes for the settlement texts the encoding found without one (learnt outside the
        transactions), filled into their records, and the codes of the texts of the rows that
        go straight in, as this database has them (a batch encoded ahead of a reconnect may
        have been encoded against another). Read off the encoding: a scan of the batch's events
        for them, before it, was 2.2% of the daemon's CPU."""
        state = self._state
        texts = state.unknown_settlements([*(text for _, text in h.unsettled), *h.texts])
        if texts:
            state.learnt_settlements(await statements.ensure_settlements(conn, texts))
        for record, text in h.unsettled:
            record[5] = state.settlement_code(text)
        h.codes = {text: state.settlement_code(text) for text in h.texts}

    async def _learn(self, conn: asyncpg.Connection, batch: FlushBatch) -> None:
        """What encoding the history needs first: numbers of new groups (outside the
        transactions), and the marks of groups taken over (another process may have moved
        them). Settlement codes come after it (``_settle``)."""
        state = self._state
        groups = state.unnumbered(batch.groups)
        stale = state.stale_groups()
        if groups:
            state.learnt_groups(await statements.ensure_groups(conn, groups))
        if stale:
            state.marks_read(await statements.read_marks(conn), stale)

    async def _write_shards(
        self, batches: list[FlushBatch], attempt: int, epochs: set[tuple[str, int]]
    ) -> dict[str, int]:
        """One transaction per shard; the first (with the cursors) commits last, so a
        committed cursor never covers rows that are not committed. A failure after some
        shards committed is retried whole: every write is idempotent (history checks every
        row of a retry)."""
        busy = [i for i, b in enumerate(batches) if i == 0 or b.history_events or b.odds]
        conns = [await self._connect(i) for i in busy]
        if self._check_cursors:
            await self._verify_cursors(conns[0])
            self._check_cursors = False
        history: HistoryBatch | None = None
        if batches[-1].history_events:
            await self._learn(conns[-1], batches[-1])
            history = self._history(batches[-1], attempt)
            if history is not None:
                await self._settle(conns[-1], history)
        txs = [conn.transaction() for conn in conns]
        try:
            for tx in txs:
                await tx.start()
            # gather without cancelling: every statement ends before any rollback starts.
            results = await asyncio.gather(
                *(
                    self._shard(c, batches[i], history if i == len(batches) - 1 else None, epochs)
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
        return self._committed([r for r in results if not isinstance(r, BaseException)])

    async def _shard(
        self,
        conn: asyncpg.Connection,
        batch: FlushBatch,
        history: HistoryBatch | None,
        epochs: set[tuple[str, int]],
    ) -> Written:
        """One connection's transaction: fenced first, then its statements."""
        await statements.fence(conn, epochs)
        return await statements.write(
            conn, batch, history, self._state.fixtures_known(), self._in_database.set
        )

    def _committed(self, results: list[Written]) -> dict[str, int]:
        """Every shard committed: publish what they wrote; rows written by table."""
        written: dict[str, int] = {}
        for result in results:
            for table, n in result.rows.items():
                written[table] = written.get(table, 0) + n
            if result.history_checked:
                self._metrics.history_checked.inc(result.history_checked)
            self._state.committed(result.cursors, result.fixtures_ensured)
            if result.fixtures_new and self._on_new_fixtures is not None:
                self._on_new_fixtures(result.fixtures_new)
        return written

    def _after_commit(
        self, batches: list[FlushBatch], written: dict[str, int], seconds: float, attempts: int
    ) -> None:
        m = self._metrics
        self._flushes += 1
        self._last_commit = time.monotonic()
        self._last_error = None
        m.last_commit.set(time.time())
        m.flush_duration.observe(seconds)
        odds = sum([b.odd_count for b in batches])
        m.batch_rows.observe(odds)
        for table, n in written.items():
            m.rows_written.labels(table).inc(n)
        now = datetime.now(UTC)
        for batch in batches:
            m.events_committed.inc(batch.stream_events)
            if batch.streamed:
                m.lag.add(*lag_counts(batch.streamed, now, m.lag.bounds))  # in C: batch.py
        log.debug(
            "batch_flushed",
            odds=odds,
            shards=len(batches),
            seconds=round(seconds, 4),
            attempts=attempts + 1,
        )
