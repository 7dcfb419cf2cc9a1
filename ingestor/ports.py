"""The narrow interfaces the stream, coordination, supervisor and readiness layers need from
storage (implemented in ``ingestor.storage``), so that their logic runs and is tested without
PostgreSQL, and no layer above storage reaches into an adapter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ingestor.domain.cursors import Cursor


class LeaseError(Exception):
    """The lease store failed (connection lost, database down): every lease is void."""


class Leases(Protocol):
    """Exclusive, session-bound claims on connection groups, shared by every process."""

    async def members(self) -> int:
        """Processes holding a membership right now (this one included)."""

    async def try_take(self, group_key: str) -> bool:
        """Claim the group if nobody holds it; True when this process now holds it."""

    async def release(self, group_key: str) -> None:
        """Give a claim back."""

    async def read_cursor(self, group_key: str) -> Cursor | None:
        """The group's committed cursor, as whoever streamed it last left it."""

    async def reset(self) -> None:
        """Forget the session (after an error): every claim is gone; the next call reconnects."""

    async def close(self) -> None:
        """End the session, releasing every claim."""


@dataclass(frozen=True, slots=True)
class HeldOdd:
    """What gap recovery needs to know of an odd the database holds."""

    status: str
    source_ts: datetime
    entry_id: str
    order_key: bytes


class OddsReader(Protocol):
    """What gap recovery reads from the database."""

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

    def take_over(self, group_key: str, cursor: Cursor | None) -> None:
        """This process now streams the group, resuming from ``cursor``."""

    async def give_back(self, group_key: str, *, drain_s: float | None) -> bool:
        """The group's worker stopped; ``drain_s``: wait for its queued events to commit.
        Whether they did."""

    async def close(self) -> None:
        """Ask ``run`` to commit everything queued so far and return."""

    def health(self) -> WriterHealth:
        """A frozen snapshot."""


class DatabaseProbe(Protocol):
    """Whether the database answers, on a connection of its own."""

    async def ping(self) -> str | None:
        """None when it answers within the bound, else why not."""
