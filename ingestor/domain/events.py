"""Row types that flow from the stream decoder to the writer, and their ordering."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING
from uuid import UUID

from ingestor.domain.errors import DecodeError, EntryIdError

# Order keys are big-endian byte strings so that Postgres compares them with plain bytea
# ordering (memcmp): (source time in µs, entry ms, entry seq, kind rank).
_ORDER = struct.Struct(">QQQB")
_CURSOR = struct.Struct(">QQ")
_LIMIT = 2**63


class Kind(IntEnum):
    """What an odds event says about an odd; the value is its rank on equal keys."""

    ODDS = 0
    LOCKED = 1
    SETTLED = 2

    @property
    def label(self) -> str:
        """The kind as stored in ``odds_history.kind``."""
        return _KIND_LABELS[self]

    @property
    def status(self) -> str:
        """The ``odds.status`` an event of this kind leaves behind."""
        return _KIND_STATUS[self]


_KIND_LABELS = ("odds", "locked", "settled")
_KIND_STATUS = ("open", "locked", "settled")


SNAPSHOT_EVENT_ID = "snapshot"  # the event id of rows from a REST snapshot
REPAIR_EVENT_ID = "repair"  # ... and of rows repaired from the vendor's history
# Rows we made from REST, not stream events: they carry no entry id.
FROM_REST = frozenset({SNAPSHOT_EVENT_ID, REPAIR_EVENT_ID})


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """Split a Redis-stream style id ``1730079534820-2`` into (ms, seq)."""
    ms, sep, seq = entry_id.partition("-")
    try:
        parsed = int(ms), int(seq) if sep else 0
    except ValueError:
        raise EntryIdError(f"entry_id {entry_id!r} is not <milliseconds>-<sequence>") from None
    if not (0 <= parsed[0] < _LIMIT and 0 <= parsed[1] < _LIMIT) or not (
        ms.isascii() and ms.isdigit() and (not sep or (seq.isascii() and seq.isdigit()))
    ):
        raise EntryIdError(f"entry_id {entry_id!r} is out of range")
    return parsed


# Before any vendor time: the start of a gap that nothing committed bounds.
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)


def entry_time(entry_id: str) -> datetime:
    """The vendor's time of an entry id (its milliseconds: Redis stream ids are times)."""
    return datetime.fromtimestamp(parse_entry_id(entry_id)[0] / 1000, UTC)


def cursor_key(entry_id: str) -> bytes:
    """Sortable key of an entry id alone (used for the group cursor)."""
    ms, seq = parse_entry_id(entry_id)
    return _CURSOR.pack(ms, seq)


def order_key(source_us: int, entry: tuple[int, int], kind: int) -> bytes:
    """Sortable key: source time first, then entry id (parsed) numerically, then kind."""
    return _ORDER.pack(max(source_us, 0), entry[0], entry[1], kind)


@dataclass(slots=True)
class PyOddRow:
    """One odd as carried by one odds, locked or settled event.

    The reference: the daemon runs its compiled twin (``_rows.pyx``, ``OddRow`` below) where
    it was built, whose fields the write path's twins read in C."""

    id: str
    kind: Kind
    stream: str
    odd_id: str | None
    sportsbook: str | None
    fixture_id: str | None
    game_id: str | None
    sport: str | None
    league: str | None
    market: str | None
    name: str | None
    selection: str | None
    selection_line: str | None
    player_id: str | None
    team_id: str | None
    version_id: int | None
    points: float | None
    price: float | None
    is_main: bool | None
    is_live: bool | None
    grouping_key: str | None
    settlement: str | None
    settled_at: datetime | None
    source_ts: datetime
    entry_id: str | None  # None for a row made from REST (a snapshot or a repair)
    event_id: str
    order_key: bytes
    # False for streamed settlements and for locks inferred by re-hydration: no price in them,
    # so the stored price must stay.
    carries_price: bool = True


if TYPE_CHECKING:
    OddRow = PyOddRow
else:
    try:
        from ingestor.domain._rows import OddRow
    except ImportError:  # built with BUILD_PURE_PYTHON=1 (setup.py)
        OddRow = PyOddRow
ROWS_COMPILED = OddRow is not PyOddRow


@dataclass(slots=True)
class FixtureRow:
    """One ``fixture-status`` event."""

    fixture_id: str
    game_id: str | None
    sport: str | None
    league: str | None
    home_team_display: str | None
    away_team_display: str | None
    start_date: datetime | None
    old_status: str | None
    new_status: str | None
    old_start_date: datetime | None
    new_start_date: datetime | None
    source_ts: datetime
    entry_id: str
    event_id: str
    order_key: bytes


@dataclass(slots=True)
class DeadLetter:
    """An event (or one odd of it) that could not be stored, kept for inspection."""

    group_key: str
    event_type: str
    event_id: str
    reason: str
    detail: str
    payload: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class GapStart:
    """The gap a connection opened (gap tracking records it; so does the writer, with the
    commit that first moves the group's cursor past it): one row per ``opened_by``."""

    opened_by: UUID
    cause: str
    from_ts: datetime
    until_ts: datetime
    unrepairable: str | None  # why no repair is possible (recorded closed), else None


@dataclass(slots=True)
class DecodedEvent:
    """Everything one SSE data event contributes to one flush."""

    group_key: str
    event_type: str
    entry_id: str
    event_id: str
    received_at: datetime
    odds: list[OddRow] = field(default_factory=list)
    fixtures: list[FixtureRow] = field(default_factory=list)
    # REST snapshots are not stream positions: they must never move the group's cursor.
    advances_cursor: bool = True
    # Odds of this event that could not be decoded (the rest of the event is kept).
    rejected: list[DecodeError] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # The group's ownership it was read under: committed only while the database holds that
    # epoch (fencing); 0: not bound to an ownership (fixture details, tests).
    epoch: int = 0
    # (ms, seq) of ``entry_id``, parsed once by the decoder (three readers parsed it again).
    entry: tuple[int, int] | None = None
    # On a connection's first data event: the gaps its connection (and any before it that
    # received nothing) opened, recorded in the transaction that commits the event, which
    # moves the group's cursor past them.
    gaps: tuple[GapStart, ...] = ()

    def position(self) -> tuple[int, int]:
        """(ms, seq) of the entry id."""
        return self.entry if self.entry is not None else parse_entry_id(self.entry_id)

    def position_key(self) -> bytes:
        """``cursor_key`` of the entry id."""
        return _CURSOR.pack(*self.position())

    @property
    def row_count(self) -> int:
        """Rows this event adds to a batch (the writer's batch cap counts these)."""
        return len(self.odds) + len(self.fixtures) or 1

    @classmethod
    def snapshot(
        cls,
        group_key: str,
        at: datetime,
        *,
        odds: list[OddRow] | None = None,
        fixtures: list[FixtureRow] | None = None,
        epoch: int = 0,
    ) -> DecodedEvent:
        """What REST said at ``at`` (gap recovery, fixture details): never a stream position."""
        return cls(
            group_key,
            SNAPSHOT_EVENT_ID,
            "0-0",
            SNAPSHOT_EVENT_ID,
            at,
            odds=odds or [],
            fixtures=fixtures or [],
            advances_cursor=False,
            epoch=epoch,
        )

    @classmethod
    def repair(cls, group_key: str, at: datetime, odds: list[OddRow], epoch: int) -> DecodedEvent:
        """Changes the vendor's history holds that a gap kept from the stream."""
        return cls(
            group_key,
            REPAIR_EVENT_ID,
            "0-0",
            REPAIR_EVENT_ID,
            at,
            odds=odds,
            advances_cursor=False,
            epoch=epoch,
        )


class Barrier:
    """Put on the queue: ``done`` is set once every event queued before it is committed."""

    def __init__(self) -> None:
        self.done = asyncio.Event()


# The one queue between the workers (and gap recovery) and the writer; a Barrier asks to be
# told when what came before is committed; None asks the writer to flush it all and stop.
EventQueue = asyncio.Queue[DecodedEvent | Barrier | None]
