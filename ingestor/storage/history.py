"""The packed history records of a batch: odds_changes rows and the change_events behind them.

Replay guard without a unique index. The writer keeps, per group, a mark: the highest entry key
it has sent to history (loaded from ``history_marks``, which the history transaction keeps).
Rows at or below their group's mark could be stored already (a replay after a reconnect, the
vendor's duplicates, a retried flush), as could REST snapshot rows and anything repeated within
the batch: those go through a staging table and an ``INSERT ... WHERE NOT EXISTS`` on today's
key (odd, source_ts, kind, entry id). Everything else is new by construction and is COPYed
straight in: measured, 1.6-1.7x the rows/s of the 0004 layout's COPY.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingestor.domain.events import SNAPSHOT_EVENT_ID, DecodedEvent, OddRow
from ingestor.domain.keys import (
    entry_key,
    ev,
    event_id,
    float4_exact,
    odd_key,
    received_us,
)

SNAPSHOT_KIND = 3  # change_events.kind of a REST snapshot row
# After a group changes hands, how long its rows are checked: longer than a full writer queue
# takes to drain, so the giver's last events and the taker's replay never both go in blind.
HANDOVER_S = 60.0
Record = tuple[Any, ...]


@dataclass(slots=True)
class HistoryBatch:
    """What one flush adds to history."""

    slot: int
    changes: list[Any] = field(default_factory=list)  # COPYed straight into odds_changes
    events: list[Record] = field(default_factory=list)  # ... and change_events
    checked_changes: list[Any] = field(default_factory=list)  # staged, then checked
    checked_events: list[Record] = field(default_factory=list)
    marks: dict[int, int] = field(default_factory=dict)  # group_no -> highest entry key
    # Rows whose settlement text has no code yet: (record, text); the flush fills the code.
    unsettled: list[tuple[list[Any], str]] = field(default_factory=list)


class HistoryEncoder:
    """Owned by the writer: its slot, its microsecond clock, the groups' marks and numbers,
    the settlement codes. ``encode`` is pure computation on them."""

    def __init__(self, group_numbers: dict[str, int], settlements: dict[str, int]) -> None:
        self.group_numbers = group_numbers
        self.settlements = settlements
        self.marks: dict[int, int] = {}
        self.stale: set[int] = set()  # groups whose mark must be read again (a takeover)
        # Groups that changed hands without a clean handover (a lost lease session, a drain
        # that timed out), until a deadline: two processes may then write the same events,
        # so every row of theirs is checked. A clean handover needs none of it: the giver
        # commits all it queued before its claim goes (coordination.py).
        self.careful: dict[int, float] = {}
        self.slot: int | None = None
        self._last_us = 0

    def _next_us(self, at: datetime) -> int:
        # Strictly increasing per writer: with the slot, change_events ids are unique.
        us = max(received_us(at), self._last_us + 1)
        self._last_us = us
        return us

    def encode(self, events: list[DecodedEvent], *, check_all: bool = False) -> HistoryBatch:
        """The batch's history; ``check_all`` (a retry) sends every row through the check."""
        assert self.slot is not None, "the history connection takes a slot first"
        out = HistoryBatch(self.slot)
        seen: set[tuple[int, int, str, int]] = set()
        for e in events:
            if not e.odds:
                continue
            if e.event_id == SNAPSHOT_EVENT_ID:
                self._snapshot(e, out)
                continue
            group = self.group_numbers[e.group_key]
            key, text = entry_key(e.entry_id)
            kind = e.odds[0].kind
            mark = self.marks.get(group, -1)
            repeat = (group, key, e.entry_id, kind) in seen
            seen.add((group, key, e.entry_id, kind))
            checked = (check_all or repeat or text is not None or key <= mark
                       or group in self.stale or self._careful(group))  # fmt: skip
            if text is None and key > mark:
                self.marks[group] = out.marks[group] = key
            sse_key, sse_text = entry_key(e.event_id) if e.event_id else (None, "")
            event = event_id(self._next_us(e.received_at), self.slot)
            (out.checked_events if checked else out.events).append(
                (event, key, sse_key if sse_text is None else None, group, int(kind), text,
                 sse_text)
            )  # fmt: skip
            rows = out.checked_changes if checked else out.changes
            for r in e.odds:
                rows.append(self._row(r, event, out, checked, key, text, False))
        return out

    def adopt_marks(self, rows: list[tuple[int, int]], read_for: set[int]) -> None:
        """The marks as ``history_marks`` had them when read for the stale groups
        ``read_for`` (another process may have raised them); ours never go down."""
        for group, key in rows:
            self.marks[group] = max(self.marks.get(group, -1), key)
        # Not clear(): a group handed over while the marks were read must be read again.
        self.stale -= read_for

    def handed_over(self, group_key: str, *, careful: bool) -> None:
        """The group changed hands: read its mark again (another process may have moved it);
        ``careful``: its previous owner may still write it, so check its rows for a while."""
        group = self.group_numbers.get(group_key)
        if group is not None:
            self.stale.add(group)
            if careful:
                self.careful[group] = time.monotonic() + HANDOVER_S

    def any_careful(self) -> bool:
        """Whether some group is still checked row by row (expired deadlines are dropped:
        a group given away may never send an event again)."""
        now = time.monotonic()
        for group in [g for g, until in self.careful.items() if now >= until]:
            del self.careful[group]
        return bool(self.careful)

    def _careful(self, group: int) -> bool:
        until = self.careful.get(group)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self.careful[group]
        return False

    def _snapshot(self, e: DecodedEvent, out: HistoryBatch) -> None:
        """One event row per snapshot row: each carries its own entry id (its own time)."""
        group = self.group_numbers[e.group_key]
        for r in e.odds:
            key, text = entry_key(r.entry_id)
            event = event_id(self._next_us(e.received_at), self.slot or 0)
            out.checked_events.append((event, key, None, group, SNAPSHOT_KIND, text, None))
            out.checked_changes.append(self._row(r, event, out, True, key, text, True))

    def _row(
        self, r: OddRow, event: int, out: HistoryBatch, checked: bool, key: int,
        text: str | None, snapshot: bool,
    ) -> Any:  # fmt: skip
        exact = None if float4_exact(r.price) and float4_exact(r.points) else [r.price, r.points]
        code = None
        if r.settlement is not None:
            code = self.settlements.get(r.settlement)
        record: Any = (odd_key(r.id), r.source_ts, ev(event, r.kind, r.is_main), r.price,
                       r.points, code, r.settled_at, exact)  # fmt: skip
        if checked:
            record = (*record, key, text, int(r.kind), snapshot, r.entry_id)
        if r.settlement is not None and code is None:
            record = list(record)
            out.unsettled.append((record, r.settlement))
        return record


# The staged rows' columns: odds_changes' own, then what the check compares.
CHANGE_COLUMNS = (
    "odd_key", "source_ts", "ev", "price", "points", "settlement", "settled_at", "exact",
)  # fmt: skip
CHECKED_COLUMNS = (*CHANGE_COLUMNS, "entry_key", "entry_text", "kind", "snapshot", "entry_id")
EVENT_COLUMNS = ("id", "entry_key", "sse_key", "group_no", "kind", "entry_text", "sse_text")
