"""Everything the write path remembers between flushes, in one object that the writer owns.

The history encoder (``history.py``) reads a frozen view of it; the statements
(``statements.py``) return what a transaction learnt. Only the writer applies what they return,
through the verbs below: nothing else writes these fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from ingestor.domain.cursors import Cursor

# After a group changes hands without a clean handover, how long its rows are checked: longer
# than a full writer queue takes to drain, so the giver's last events and the taker's replay
# never both go in blind.
HANDOVER_S = 60.0
# Fixture ids known to have a row; past this many the set starts again (a probe each).
FIXTURES_KNOWN_MAX = 200_000
# After a row made from REST (a snapshot's, a repair's), how long the stream's rows of that
# odd are checked, so that the stream's row of the same change replaces it: longer than a
# replay after a reconnect or a snapshot racing the live stream takes.
FROM_REST_S = 120.0
FROM_REST_MAX = 500_000  # odds remembered so; past this the oldest window is forgotten


@dataclass(frozen=True, slots=True)
class HistoryContext:
    """What encoding a batch's history reads: a read-only view, never a copy."""

    slot: int
    group_numbers: Mapping[str, int]
    settlements: Mapping[str, int]
    marks: Mapping[int, int]
    # Groups whose every row is checked: taken over (their mark is read again), or changed
    # hands without a clean handover (another process may still write them).
    checked: AbstractSet[int]
    last_us: int
    # Odds with a row made from REST lately: odd id -> (until when its streamed rows are
    # checked, the newest time of its rows made from REST: only rows up to it are).
    from_rest: Mapping[str, tuple[float, datetime]]
    now: float
    # Not before any of ``from_rest``'s times (None: not known): a streamed row newer than it
    # cannot be a twin, and skips the lookup (a hash and two probes per odd, 2.3% of the
    # daemon's CPU on the bench while any row made from REST was remembered).
    rest_newest: datetime | None = None


class WriteState:
    """The writer's memory: its slot, the groups' numbers, marks and committed cursors, the
    settlement codes, the fixtures known to have a row, and which groups are checked."""

    def __init__(
        self,
        group_numbers: Mapping[str, int],
        cursors: Mapping[str, Cursor],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._slot: int | None = None
        self._group_numbers = dict(group_numbers)
        self._settlements: dict[str, int] = {}
        self._marks: dict[int, int] = {}
        self._stale: set[int] = set()  # marks to read again (a takeover)
        self._careful: dict[int, float] = {}  # group -> monotonic deadline
        self._fixtures_known: set[str] = set()
        self._from_rest: dict[str, tuple[float, datetime]] = {}
        self._rest_until = 0.0  # when the last of _from_rest's windows closes
        self._rest_newest: datetime | None = None  # _from_rest's newest time (or later)
        self._last_us = 0
        self._cursors = dict(cursors)

    # --- reading ----------------------------------------------------------------------------

    @property
    def slot(self) -> int | None:
        """The history connection's writer slot (None until it has one)."""
        return self._slot

    def cursor(self, group_key: str) -> Cursor | None:
        """The group's committed cursor, if it ever committed."""
        return self._cursors.get(group_key)

    def committed_groups(self) -> int:
        """How many groups have a committed cursor."""
        return len(self._cursors)

    def cursors(self) -> dict[str, Cursor]:
        """Every committed cursor this process knows of (a copy)."""
        return dict(self._cursors)

    def numbered(self, group_keys: Iterable[str]) -> bool:
        """Whether every one of these groups has its number."""
        return all(g in self._group_numbers for g in group_keys)

    def unnumbered(self, group_keys: Iterable[str]) -> set[str]:
        """The groups of these that have no number yet."""
        return {g for g in group_keys if g not in self._group_numbers}

    def unknown_settlements(self, texts: Iterable[str]) -> set[str]:
        """The settlement texts of these that have no code yet."""
        return {t for t in texts if t not in self._settlements}

    def settlement_code(self, text: str) -> int:
        """The code of a settlement text learnt before."""
        return self._settlements[text]

    def fixtures_known(self) -> AbstractSet[str]:
        """Fixture ids known to have a row (read-only)."""
        return self._fixtures_known

    def stale_groups(self) -> frozenset[int]:
        """Groups whose mark must be read again before their rows are encoded."""
        return frozenset(self._stale)

    def any_checked(self) -> bool:
        """Whether some group's rows are all checked now (expired deadlines are dropped)."""
        now = self._clock()
        for group in [g for g, until in self._careful.items() if now >= until]:
            del self._careful[group]
        return bool(self._stale or self._careful)

    def history_context(self) -> HistoryContext:
        """The view the encoder reads (the history connection holds a slot)."""
        assert self._slot is not None, "the history connection takes a slot first"
        now = self._clock()
        careful = {g for g, until in self._careful.items() if now < until}
        return HistoryContext(
            self._slot,
            MappingProxyType(self._group_numbers),
            MappingProxyType(self._settlements),
            MappingProxyType(self._marks),
            frozenset(self._stale | careful),
            self._last_us,
            MappingProxyType(self._from_rest),
            now,
            self._rest_newest,
        )

    # --- learning ---------------------------------------------------------------------------

    def opened(self, slot: int, known: Known) -> None:
        """A new history connection: its slot, and what the database knows."""
        self._slot = slot
        self._adopt(known.marks, set(self._stale))
        # What the database says, not what we remembered: after a failover to a standby that
        # lagged, a code or number we learnt may be gone (it is asked for again).
        self._settlements = dict(known.settlements)
        self._group_numbers = dict(known.group_numbers)

    def marks_read(self, marks: Iterable[tuple[int, int]], read_for: AbstractSet[int]) -> None:
        """The marks ``history_marks`` held when read for the stale groups ``read_for``."""
        self._adopt(marks, read_for)

    def _adopt(self, marks: Iterable[tuple[int, int]], read_for: AbstractSet[int]) -> None:
        # Another process may have raised a mark; ours never go down.
        for group, key in marks:
            self._marks[group] = max(self._marks.get(group, -1), key)
        # Not clear(): a group handed over while the marks were read must be read again.
        self._stale -= read_for

    def learnt_groups(self, numbers: Mapping[str, int]) -> None:
        """Numbers given to groups that had none."""
        self._group_numbers.update(numbers)

    def learnt_settlements(self, codes: Mapping[str, int]) -> None:
        """Codes given to settlement texts that had none."""
        self._settlements.update(codes)

    def encoded(
        self, marks: Mapping[int, int], last_us: int, from_rest: Iterable[tuple[str, datetime]]
    ) -> None:
        """A batch's history was encoded: the marks it raised, the clock it reached, the odds
        it wrote rows made from REST for (id, time)."""
        for group, key in marks.items():
            if key > self._marks.get(group, -1):
                self._marks[group] = key
        self._last_us = max(self._last_us, last_us)
        now = self._clock()
        until = now + FROM_REST_S
        remembered = self._from_rest
        if remembered and now >= self._rest_until:
            # Every window has closed: none of them can check a row any more, and an empty
            # map spares every streamed odd its lookup.
            remembered.clear()
            self._rest_newest = None
        for odd, source_ts in from_rest:
            held = remembered.get(odd)
            newest = source_ts if held is None or held[1] < source_ts else held[1]
            remembered[odd] = (until, newest)
            self._rest_until = until
            if self._rest_newest is None or self._rest_newest < newest:
                self._rest_newest = newest
        if len(remembered) > FROM_REST_MAX:
            for gone in [k for k, (u, _) in remembered.items() if u <= now]:
                del remembered[gone]

    def committed(self, cursors: Iterable[tuple[str, Cursor]], fixtures: Iterable[str]) -> None:
        """A flush committed: the cursors the database now holds, fixtures that have a row."""
        for group_key, cursor in cursors:
            self._cursors[group_key] = cursor
        if len(self._fixtures_known) > FIXTURES_KNOWN_MAX:
            self._fixtures_known.clear()  # forgetting costs one ON CONFLICT probe each
        self._fixtures_known.update(fixtures)

    def taken_over(self, group_key: str, cursor: Cursor | None, *, careful: bool) -> None:
        """This process took the group: resume from the cursor the database holds, and read
        its mark again before writing it; ``careful``: another process streamed it until
        now, so its rows are checked for a while (a replay may repeat what it stored)."""
        self.rewound(group_key, cursor)
        self.handed_over(group_key, careful=careful)

    def rewound(self, group_key: str, cursor: Cursor | None) -> None:
        """The group's cursor is what the database holds (a claim, or a failover that lost
        commits)."""
        if cursor is None:
            self._cursors.pop(group_key, None)
        else:
            self._cursors[group_key] = cursor

    def handed_over(self, group_key: str, *, careful: bool) -> None:
        """The group changed hands: read its mark again; ``careful``: another process may
        still write it, so its rows are checked for a while."""
        group = self._group_numbers.get(group_key)
        if group is not None:
            self._stale.add(group)
            if careful:
                self._careful[group] = self._clock() + HANDOVER_S

    def connection_lost(self) -> None:
        """The history connection (and its slot) is gone."""
        self._slot = None

    def flush_failed(self) -> None:
        """The connections are gone: what they knew to exist is asked again (after a failover
        a fixture row we made may be gone)."""
        self._fixtures_known.clear()


@dataclass(frozen=True, slots=True)
class Known:
    """What a new history connection reads: the marks, settlement codes, group numbers."""

    marks: list[tuple[int, int]]
    settlements: dict[str, int]
    group_numbers: dict[str, int]
