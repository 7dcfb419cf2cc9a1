"""The narrow interfaces the stream and coordination layers need from storage (implemented in
``ingestor.storage``), so that their logic runs and is tested without PostgreSQL."""

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
