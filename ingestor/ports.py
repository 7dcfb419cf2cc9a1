"""The narrow interfaces the stream, coordination, supervisor and readiness layers need from
storage (implemented in ``ingestor.storage``), so that their logic runs and is tested without
PostgreSQL, and no layer above storage reaches into an adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ingestor.domain.cursors import Cursor


class StoreError(Exception):
    """A port backed by the database failed (connection lost, database down); the callers
    retry. The message says what failed, without the URL."""


class LeaseError(StoreError):
    """The lease store failed: every lease is void."""


class LedgerError(StoreError):
    """The gap ledger could not be read or written; retried."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A group just taken: its ownership epoch (a flush commits only under it) and the cursor
    whoever streamed it last committed."""

    epoch: int
    cursor: Cursor | None


class Leases(Protocol):
    """Exclusive, session-bound claims on connection groups, shared by every process."""

    async def members(self) -> int:
        """Processes holding a membership right now (this one included)."""

    async def try_take(self, group_key: str) -> bool:
        """Claim the group if nobody holds it; True when this process now holds it."""

    async def release(self, group_key: str) -> None:
        """Give a claim back."""

    async def claim(self, group_key: str) -> Claim | None:
        """After ``try_take``: move the group's epoch on (once every flush of its previous
        owner has ended) and read its committed cursor. None: the previous owner's flush
        held on for too long; give the group back and try again later."""

    async def reset(self) -> None:
        """Forget the session (after an error): every claim is gone; the next call reconnects."""

    async def close(self) -> None:
        """End the session, releasing every claim."""


class LostGroups:
    """Groups the writer found fenced out (another process claimed them since their events
    were read), reported to the coordinator, which gives them up."""

    def __init__(self) -> None:
        self._lost: dict[str, int] = {}
        self.reported = asyncio.Event()

    def report(self, group_key: str, epoch: int) -> None:
        """The writer dropped the group's events read under ``epoch``."""
        self._lost[group_key] = max(epoch, self._lost.get(group_key, 0))
        self.reported.set()

    def take(self) -> dict[str, int]:
        """Everything reported since the last call (group -> the epoch found stale)."""
        lost, self._lost = self._lost, {}
        self.reported.clear()
        return lost


@dataclass(frozen=True, slots=True)
class HeldOdd:
    """What gap recovery needs to know of an odd the database holds."""

    status: str
    source_ts: datetime
    order_key: bytes


class OddsReader(Protocol):
    """What gap recovery reads from the database (``StoreError`` when it cannot)."""

    async def odds_of_fixtures(
        self,
        fixture_ids: Sequence[str],
        stream: str,
        sportsbooks: Sequence[str] | None,
        markets: Sequence[str] | None,
    ) -> dict[str, HeldOdd]:
        """The stored odds of these fixtures within the stream's filters, by odd id."""

    async def known_fixtures(
        self, stream: str, leagues: Sequence[str], window_h: float
    ) -> list[str]:
        """Fixtures the database has seen lately (when the REST listing fails)."""


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """The writer at one moment, as readiness and the progress line see it."""

    queued: int  # events in the queue, not yet taken
    held: int  # events taken and not yet committed (a retrying flush holds its events)
    stall_s: float  # seconds events have been held without any commit; 0 while none is held
    last_error: str | None  # the last flush attempt's error, None once one commits
    flushes: int  # flushes committed
    committed_groups: int  # groups with a committed cursor

    @property
    def pending(self) -> int:
        """Events accepted and not yet committed."""
        return self.queued + self.held


class CommittedCursors(Protocol):
    """Where each group's stream was last committed: what a worker resumes from."""

    def committed(self, group_key: str) -> Cursor | None:
        """The group's committed cursor, if it ever committed."""


class WritePath(CommittedCursors, Protocol):
    """The writer as the rest of the daemon sees it: a loop to run and a few verbs."""

    async def run(self) -> None:
        """Write until ``close``: everything queued before it is committed on return."""

    def take_over(self, group_key: str, cursor: Cursor | None, *, careful: bool = False) -> None:
        """This process now streams the group, resuming from ``cursor``; ``careful``: another
        process streamed it until now."""

    async def give_back(self, group_key: str, *, drain_s: float | None) -> bool:
        """The group's worker stopped; ``drain_s``: wait for its queued events to commit.
        Whether they did."""

    async def close(self) -> None:
        """Ask ``run`` to commit everything queued so far and return."""

    async def flushed(self) -> None:
        """Until everything queued before this call is committed (or dropped)."""

    def health(self) -> WriterHealth:
        """A frozen snapshot."""


class DatabaseProbe(Protocol):
    """Whether the database answers, on a connection of its own."""

    async def ping(self) -> str | None:
        """None when it answers within the bound, else why not."""


@dataclass(frozen=True, slots=True)
class RepairWork:
    """An odd whose history a gap still needs: from when on, and which gaps list it."""

    odd_id: str
    group_key: str
    from_ts: datetime
    gaps: tuple[int, ...]


class GapLedger(Protocol):
    """The gap ledger (``stream_gaps``) and its work queue: every stretch of a group's stream
    that may be missing from history, and its repair."""

    async def open(
        self,
        group_key: str,
        cause: str,
        from_ts: datetime,
        until_ts: datetime,
        *,
        unrepairable: str | None = None,
        opened_by: UUID | None = None,
    ) -> int:
        """Record a gap; ``unrepairable``: why no repair is possible (closed at once);
        ``opened_by``: the connection whose gap it is (one row, whoever records it first)."""

    async def scope(
        self,
        group_key: str,
        changed: Mapping[str, datetime | None],
        taken_at: datetime,
        epoch: int,
    ) -> int:
        """A whole snapshot of the group, begun at ``taken_at``, came back: the gaps not
        closed that ended before it get the odds that may have changed during them (odd id ->
        its snapshot time, None: no longer returned). Nothing is queued unless the group is
        still at ``epoch``, the one the snapshot's rows were queued under (0: not fenced).
        Returns how many (gap, odd) pairs were queued for repair."""

    async def close(self, gap_ids: Sequence[int], state: str, detail: str) -> None:
        """Close gaps without repair (replayed by the vendor, or unrepairable)."""

    async def work(self, group_keys: Sequence[str], limit: int) -> list[RepairWork]:
        """The repair's next odds, oldest gaps first."""

    async def held(self, odd_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The stored ``odds`` rows of these odds, by id."""

    async def repaired_rows(self, odd_ids: Sequence[str]) -> int:
        """How many history rows made by repair these odds have."""

    async def repaired(
        self, work: Sequence[RepairWork], added: int, group_key: str, epoch: int
    ) -> bool:
        """A call's work is stored: its odds leave the queue, its gaps count it (and close
        when nothing is left), one call spent. Only while ``group_key`` is still at
        ``epoch`` (else the writer fenced the rows out: the work stays). Whether recorded."""

    async def summary(self) -> dict[str, tuple[int, datetime | None]]:
        """Gaps not repaired, by state: how many, and when the oldest was opened."""
