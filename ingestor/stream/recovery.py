"""What one group's connections may have missed, and getting it back.

Every connection of a group after the first of an ownership (and the first, when the group
resumes from a committed cursor) leaves a stretch the vendor may not replay: it becomes a gap
in the ledger (``stream_gaps``), from the last event received before (the committed cursor,
at the start of an ownership) to the moment the stream was back. After every connect a REST
snapshot brings ``odds`` up to date (again and again while it fails) and, on the copilot
stream, scopes the group's open gaps: the odds whose snapshot time is past a gap's start, and
those the database held open that the snapshot no longer returns, are the ones whose history
may lack changes; the repair (``repair.py``) asks the vendor's history for those alone.

A gap the vendor visibly replays across (the new connection's first event is one we had
received already) is closed as replayed. The regular stream has no documented history
source: its gaps are recorded unrepairable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import structlog

from ingestor.domain.cursors import Cursor
from ingestor.domain.events import GapStart, entry_time
from ingestor.domain.groups import Group
from ingestor.lifecycle import sleep_or_stop
from ingestor.metrics import Metrics
from ingestor.ports import GapLedger, LedgerError
from ingestor.stream.rehydrate import Rehydrator, Snapshot

log = structlog.get_logger("ingestor.recovery")

# A snapshot that failed (the vendor's REST down) is taken again after rehydrate_retry_s,
# doubling up to this many times it, while the connection lasts: the gap stays open (and the
# odds the snapshot would have fixed stay as they were) until one comes back whole.
RESNAPSHOT_CAP = 20
# How long the ledger is retried when recording a gap fails (the database is down): the
# gap is recorded once it answers, whatever else fails meanwhile.
LEDGER_RETRY_S = (1.0, 30.0)
UNREPAIRABLE = "the regular stream has no documented source of history"
NO_SNAPSHOT = "rehydrate = false: no snapshot tells which odds changed"
REPLAYED = (
    "the vendor replayed across it (the first event after the reconnect was one received before)"
)


@dataclass(slots=True)
class _Connection:
    """What gap tracking knows of one connection: the newest entry received before it
    opened, whether its first data event came (and was one received before: a replay), and
    its gap's id once recorded and scoped. Its snapshot may end after a newer connection
    opened, so it reads this, never the current connection's."""

    before: tuple[int, int] | None
    first: bool = True
    replayed: bool = False
    gap: int | None = None


class Recovery:
    """One group's gap tracking and its snapshots; the worker calls ``begin`` (a new
    ownership), ``connected`` (each connection), ``received`` (each data event), ``stop``."""

    def __init__(
        self,
        group: Group,
        rehydrator: Rehydrator | None,
        ledger: GapLedger | None,
        metrics: Metrics,
        stop: asyncio.Event,
    ) -> None:
        self._group = group
        self._rehydrator = rehydrator
        self._ledger = ledger
        self._metrics = metrics
        self._stop = stop
        # At most one snapshot runs, and at most one more waits for it: a newer connection
        # replaces the waiting one (it has done nothing yet), never the running one. When a
        # newer connection cancelled the running snapshot, a storm of reconnects shorter
        # than a snapshot let none complete: no scope for 7.5 minutes of a soak, and an odd
        # posted, then suspended before any snapshot finished, was never held, so the repair
        # never asked for its changes (14 of them missing in a soak).
        self._running: asyncio.Task[None] | None = None
        self._waiting: asyncio.Task[None] | None = None
        self._resting = False  # the running one waits to take a failed snapshot again
        self.epoch = 0
        self._resume: Cursor | None = None
        self._high: tuple[int, int] | None = None  # newest entry received this ownership
        self._opened: datetime | None = None  # when this ownership's last connection opened
        self._conn = _Connection(None)  # the current connection
        # The newest whole snapshot: a gap recorded late (the database was down) is scoped
        # with it when it began after the gap ended.
        self._snapshot: Snapshot | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # Gaps being recorded: a newer connection replaces a waiting snapshot, never a record.
        self._recording: set[asyncio.Task[int | None]] = set()

    def begin(self, epoch: int, resume: Cursor | None) -> None:
        """A new ownership of the group: its epoch, and the cursor it resumes from."""
        self.epoch = epoch
        self._resume = resume
        self._high = None
        self._opened = None
        self._snapshot = None

    def connected(self) -> GapStart | None:
        """A connection is open: record what may be missing, and snapshot the group. Returns
        the gap, for the connection's first data event to carry: the writer records it with
        that event's commit, which moves the cursor past it (a crash between that commit and
        the record here would have lost the stretch from the ledger)."""
        conn = self._conn = _Connection(self._high)
        now = datetime.now(UTC)
        if self._high is not None:  # complete up to the newest event received
            bounds = ("reconnect", datetime.fromtimestamp(self._high[0] / 1000, UTC))
        elif self._opened is not None:  # connected before and received nothing: since then
            bounds = ("reconnect", self._opened)
        elif self._resume is not None:
            bounds = ("start", entry_time(self._resume.entry_id))
        else:
            bounds = None  # a group never committed: history starts now
        self._opened = now
        opening = gap = None
        if bounds is not None and self._ledger is not None:
            gap = GapStart(uuid4(), bounds[0], bounds[1], now, self._unrepairable())
            opening = asyncio.create_task(self._open(gap), name=f"gap:{self._group.key}")
            self._recording.add(opening)
            opening.add_done_callback(self._recording.discard)
        if self._waiting is not None:
            self._waiting.cancel()  # superseded before it began
        if self._running is not None and self._resting:
            self._running.cancel()  # waiting to take a failed snapshot again: this one will
        self._waiting = asyncio.create_task(
            self._recover(conn, opening, self._running), name=f"rehydrate:{self._group.key}"
        )
        return gap

    def received(self, entry: tuple[int, int]) -> None:
        """A data event with this entry id (ms, seq) arrived on the current connection."""
        conn = self._conn
        if conn.first:
            conn.first = False
            if conn.before is not None and entry <= conn.before:
                conn.replayed = True  # the vendor resent what we had: it replays
                if conn.gap is not None and self._ledger is not None:
                    task = asyncio.create_task(self._close_replayed(conn.gap))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        if self._high is None or entry > self._high:
            self._high = entry

    async def stop(self) -> None:
        """The worker stops: its snapshot goes with it (an unscoped gap stays open, and the
        group's next snapshot, here or in its next owner, scopes it), so does a gap not yet
        recorded (the next owner starts from the committed cursor: its own gap covers), and
        so does the close of a replayed gap in flight (the gap stays open: the next snapshot
        scopes it and the repair finds nothing missing, the long way)."""
        running = (self._running, self._waiting, *self._recording, *self._closing)
        tasks = [t for t in running if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._running in tasks:  # not one a connection opened meanwhile
            self._running = None
        if self._waiting in tasks:
            self._waiting = None

    # --- the connection's recovery ----------------------------------------------------------

    async def _recover(
        self,
        conn: _Connection,
        opening: asyncio.Task[int | None] | None,
        running: asyncio.Task[None] | None,
    ) -> None:
        key = self._group.key
        me = asyncio.current_task()
        try:
            if running is not None:
                await asyncio.wait([running])  # its end, without cancelling it if we are
            self._waiting, self._running = None, me
            await self._snapshots(conn, opening)
        except Exception:
            # Never fatal to the stream: the next connect tries again.
            self._metrics.rehydrations.labels(key, "crashed").inc()
            log.exception("rehydrate_crashed", group=key)
        finally:
            if self._running is me:
                self._running = None

    def _unrepairable(self) -> str | None:
        """Why this group's gaps cannot be repaired, if they cannot."""
        if self._group.stream.kind != "copilot":
            return UNREPAIRABLE
        if self._rehydrator is None:
            return NO_SNAPSHOT
        return None

    async def _open(self, gap: GapStart) -> int | None:
        assert self._ledger is not None
        cause, start, until, why = gap.cause, gap.from_ts, gap.until_ts, gap.unrepairable
        delay = LEDGER_RETRY_S[0]
        while True:
            try:
                gap_id = await self._ledger.open(
                    self._group.key, cause, start, until, unrepairable=why, opened_by=gap.opened_by
                )
                break
            except LedgerError as exc:
                log.warning("gap_record_failed", group=self._group.key, error=str(exc)[:200])
                if await sleep_or_stop(self._stop, delay):
                    return None
                delay = min(delay * 2, LEDGER_RETRY_S[1])
        self._metrics.gaps_opened.labels(cause).inc()
        snapshot = self._snapshot
        if why is None and snapshot is not None and snapshot.taken_at >= until:
            await self._scope(snapshot)  # its own snapshot has come and gone
        log.info(
            "gap_opened",
            group=self._group.key,
            gap_id=gap_id,
            cause=cause,
            from_ts=start.isoformat(),
            until_ts=until.isoformat(),
            unrepairable=why,
        )
        return gap_id

    async def _snapshots(self, conn: _Connection, opening: asyncio.Task[int | None] | None) -> None:
        """Snapshot until one comes back whole, then scope the group's open gaps with it (this
        connection's once it is recorded)."""
        if self._rehydrator is None:
            return
        first = delay = self._rehydrator.retry_s
        while True:
            snapshot = await self._rehydrator.run(self._group, self.epoch)
            if snapshot.complete:
                break
            if self._waiting is not None:
                return  # a newer connection's snapshot takes over now
            log.info("rehydrate_again", group=self._group.key, in_s=delay)
            self._resting = True  # a newer connection cancels it here (nothing in flight)
            try:
                if await sleep_or_stop(self._stop, delay):
                    return
            finally:
                self._resting = False
            delay = min(delay * 2, first * RESNAPSHOT_CAP)
        self._snapshot = snapshot
        if self._ledger is None or self._group.stream.kind != "copilot":
            return
        gap_id = await asyncio.shield(opening) if opening is not None else None
        closed = False
        if conn.replayed and gap_id is not None:  # closed first: the scope then skips it
            await self._close_replayed(gap_id)
            closed = True
        # The group's other gaps, whether or not this one was replayed across: after a storm
        # of reconnects (each superseding the last snapshot before it could scope), a replay
        # on the connection that lasts was the last chance, and 1,484 gaps of a soak stayed
        # open with the stream quiet.
        await self._scope(snapshot)
        conn.gap = gap_id
        if conn.replayed and not closed and gap_id is not None:  # came while we scoped
            await self._close_replayed(gap_id)

    async def _scope(self, snapshot: Snapshot) -> None:
        """The group's gaps that ended before the snapshot began get their odds to repair."""
        assert self._ledger is not None
        delay = LEDGER_RETRY_S[0]
        while True:
            try:
                queued = await self._ledger.scope(
                    self._group.key, snapshot.changed, snapshot.taken_at, snapshot.epoch
                )
                break
            except LedgerError as exc:
                log.warning("gap_scope_failed", group=self._group.key, error=str(exc)[:200])
                if await sleep_or_stop(self._stop, delay):
                    return
                delay = min(delay * 2, LEDGER_RETRY_S[1])
        if queued:
            log.info("gap_scoped", group=self._group.key, odds_to_repair=queued)

    async def _close_replayed(self, gap_id: int) -> None:
        assert self._ledger is not None
        try:
            await self._ledger.close([gap_id], "repaired", REPLAYED)
        except LedgerError as exc:  # the repair then does it the long way: nothing is lost
            log.warning("gap_close_failed", group=self._group.key, error=str(exc)[:200])
            return
        log.info("gap_replayed", group=self._group.key, gap_id=gap_id)
