"""The packed history records of a batch: odds_changes rows and the change_events behind them.

Replay guard without a unique index. The writer keeps, per group, a mark: the highest entry key
it has sent to history (loaded from ``history_marks``, which the history transaction keeps).
Rows at or below their group's mark could be stored already (a replay after a reconnect, the
vendor's duplicates, a retried flush), as could REST snapshot rows and anything repeated within
the batch: those go through a staging table and an ``INSERT ... WHERE NOT EXISTS`` on today's
key (odd, source_ts, kind, entry id). Everything else is new by construction and is COPYed
straight in: measured, 1.6-1.7x the rows/s of the 0004 layout's COPY.

``encode`` is pure: it reads the writer's state through a ``HistoryContext`` and returns, with
the records, the marks it raised and the clock it reached, for the writer to keep.

The compact encodings (odd keys, entry keys, event ids, flags) are below the records, in the
same module: the SQL side of each is in alembic/versions/0005 (``odd_key(text)`` and the
``odds_history`` view), and a test holds the two sides equal.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingestor.domain.events import (
    REPAIR_EVENT_ID,
    SNAPSHOT_EVENT_ID,
    DecodedEvent,
    Kind,
    OddRow,
)
from ingestor.storage.write import pgcopy
from ingestor.storage.write.state import HistoryContext

# change_events.kind of rows made from REST: a snapshot row, a row repaired from the vendor's
# history. Such rows carry no entry id (entry key 0).
FROM_REST_KIND = {SNAPSHOT_EVENT_ID: 3, REPAIR_EVENT_ID: 4}
STREAMED = 0  # the staged ``source`` of a streamed row
Record = tuple[Any, ...]


@dataclass(slots=True)
class HistoryBatch:
    """What one flush adds to history, and what encoding it learnt."""

    slot: int
    last_us: int = 0  # the writer's microsecond clock after this batch
    # Each event whose rows go straight into odds_changes, with its odds: (event id, rows).
    # Their COPY is written from the rows at the flush (``changes_payload``), once their
    # settlement codes are known, with no record per odd between: records and their COPY were
    # 2,825 instructions per odd (callgrind, the bench's events); written from the rows, decode
    # to COPY bytes came down from 27,070 to 26,079 per odd.
    changes: list[tuple[int, list[OddRow]]] = field(default_factory=list)
    change_rows: int = 0  # how many rows those events have
    texts: set[str] = field(default_factory=set)  # the settlement texts of those rows
    codes: dict[str, int] = field(default_factory=dict)  # ... their codes, the flush's
    events: list[Record] = field(default_factory=list)  # change_events of ``changes``
    checked_changes: list[Any] = field(default_factory=list)  # staged, then checked
    checked_events: list[Record] = field(default_factory=list)
    marks: dict[int, int] = field(default_factory=dict)  # group_no -> highest entry key
    # Rows whose settlement text has no code yet: (record, text); the flush fills the code.
    unsettled: list[tuple[list[Any], str]] = field(default_factory=list)
    # Odd id and time of each row made from REST: the stream's rows of those odds, up to that
    # time, are checked for a while, so that the stream's row of the same change replaces them
    # (one change, one row). By id, not odd key: the check runs on every streamed row for two
    # minutes after any snapshot, and an odd key per row there cost 3% of the daemon's CPU.
    from_rest: list[tuple[str, datetime]] = field(default_factory=list)
    repaired: bool = False  # it holds rows of a repair


def encode(
    ctx: HistoryContext, events: list[DecodedEvent], *, check_all: bool = False
) -> HistoryBatch:
    """The batch's history; ``check_all`` (a retry) sends every row through the check."""
    out = HistoryBatch(ctx.slot, ctx.last_us)
    encode_into(ctx, events, check_all, out)
    return out


def pure_encode_into(
    ctx: HistoryContext, events: list[DecodedEvent], check_all: bool, out: HistoryBatch
) -> None:
    """The events' records, marks and clock into ``out`` (compiled: ``_history.pyx``)."""
    seen: set[tuple[int, int, str, int]] = set()
    for e in events:
        if not e.odds:
            continue
        if e.event_id in FROM_REST_KIND:
            _from_rest(ctx, e, out)
            continue
        group = ctx.group_numbers[e.group_key]
        key, text = entry_key(e.entry_id)
        kind = e.odds[0].kind
        mark = out.marks.get(group, ctx.marks.get(group, -1))
        repeat = (group, key, e.entry_id, kind) in seen
        seen.add((group, key, e.entry_id, kind))
        checked = (
            check_all
            or repeat
            or text is not None
            or key <= mark
            or group in ctx.checked
            or (bool(ctx.from_rest) and _twin_possible(ctx, e))
        )
        if text is None and key > mark:
            out.marks[group] = key
        sse_key: int | None
        if e.event_id == e.entry_id:  # the stream's usual case: the SSE id is the entry id
            sse_key, sse_text = key, text
        else:
            sse_key, sse_text = entry_key(e.event_id) if e.event_id else (None, "")
        event = event_id(_next_us(out, e), ctx.slot)
        record = (
            event,
            key,
            sse_key if sse_text is None else None,
            group,
            int(kind),
            text,
            sse_text,
        )
        if checked:
            out.checked_events.append(record)
            staged = (key, text, STREAMED)
            records(e.odds, event, ctx.settlements, staged, out.checked_changes, out.unsettled)
        else:
            out.events.append(record)
            out.changes.append((event, e.odds))
            out.change_rows += len(e.odds)
            out.texts.update(r.settlement for r in e.odds if r.settlement is not None)


def _twin_possible(ctx: HistoryContext, e: DecodedEvent) -> bool:
    """Whether a row made from REST lately may be this streamed change already. Only a row of
    the same time can be (the check matches odd, time and kind): a streamed row newer than
    every row made from REST of its odd goes straight in. Measured on the bench, whose stream
    follows a snapshot of every odd, so that every row of it was checked before: PostgreSQL's
    CPU per odd 31-32 µs before, 21.7-22.0 after, end to end 28.8k to 37.6k odds/s (same slow
    machine, same hour)."""
    held, now, newest = ctx.from_rest, ctx.now, ctx.rest_newest
    for r in e.odds:
        if newest is not None and r.source_ts > newest:
            continue  # newer than every row made from REST
        rest = held.get(r.id)
        if rest is not None and rest[0] > now and r.source_ts <= rest[1]:
            return True
    return False


def _next_us(out: HistoryBatch, e: DecodedEvent) -> int:
    # Strictly increasing per writer: with the slot, change_events ids are unique.
    out.last_us = max(received_us(e.received_at), out.last_us + 1)
    return out.last_us


def _from_rest(ctx: HistoryContext, e: DecodedEvent, out: HistoryBatch) -> None:
    """Rows made from REST: one event row each (kind 3 or 4, no entry id), all checked."""
    group = ctx.group_numbers[e.group_key]
    kind = FROM_REST_KIND[e.event_id]
    out.repaired = out.repaired or e.event_id == REPAIR_EVENT_ID
    for r in e.odds:
        event = event_id(_next_us(out, e), ctx.slot)
        out.checked_events.append((event, 0, None, group, kind, None, None))
        out.checked_changes.append(_row(ctx.settlements, r, event, out.unsettled, (0, None, kind)))
        out.from_rest.append((r.id, r.source_ts))


Staged = tuple[int, str | None, int]  # (entry key, entry text, source) of a checked row


def pure_records(
    odds: list[OddRow],
    event: int,
    settlements: Mapping[str, int],
    staged: Staged | None,
    rows: list[Any],
    unsettled: list[tuple[list[Any], str]],
) -> None:
    """Append the odds_changes records of one event's odds to ``rows``."""
    for r in odds:
        rows.append(_row(settlements, r, event, unsettled, staged))


def change_records(h: HistoryBatch) -> list[Record]:
    """The odds_changes records of the rows that go straight in, with the flush's codes (a
    settlement text without one is a bug of the flush: KeyError)."""
    codes = h.codes
    return [
        _change(r, event, None if r.settlement is None else codes[r.settlement])
        for event, odds in h.changes
        for r in odds
    ]


def pure_changes_payload(h: HistoryBatch, codes: str) -> bytes:
    """The binary COPY stream of ``change_records`` (``codes``: statements.CHANGES)."""
    return pgcopy.pure_payload(change_records(h), codes)


def _change(r: OddRow, event: int, code: int | None) -> Record:
    """One odds_changes record (CHANGE_COLUMNS)."""
    exact = None if float4_exact(r.price) and float4_exact(r.points) else [r.price, r.points]
    return (
        ODD_KEYS.get(r.id) or odd_key(r.id),  # a call less on the usual hit
        r.source_ts,
        ev(event, r.kind, r.is_main),
        r.price,
        r.points,
        code,
        r.settled_at,
        exact,
    )


def _row(
    settlements: Mapping[str, int],
    r: OddRow,
    event: int,
    unsettled: list[tuple[list[Any], str]],
    staged: Staged | None,
) -> Any:
    """One odds_changes record; ``staged`` (entry key, entry text, source): a record for the
    staging table, with what the check compares. A record whose settlement text has no code
    yet is a list, also put in ``unsettled`` (the flush fills the code in)."""
    code = None
    if r.settlement is not None:
        code = settlements.get(r.settlement)
    record: Any = _change(r, event, code)
    if staged is not None:
        # An inferred lock (a snapshot's lock) holds only while `odds` still has the open row
        # it replaces: that row's order key, same time and entry, the open rank.
        held = r.order_key[:-1] + b"\x00" if staged[2] == 3 and r.kind == Kind.LOCKED else None
        record = (*record, *staged, int(r.kind), held)
    if r.settlement is not None and code is None:
        record = list(record)
        unsettled.append((record, r.settlement))
    return record


# The staged rows' columns: odds_changes' own, then what the check compares.
CHANGE_COLUMNS = (
    "odd_key",
    "source_ts",
    "ev",
    "price",
    "points",
    "settlement",
    "settled_at",
    "exact",
)
CHECKED_COLUMNS = (*CHANGE_COLUMNS, "entry_key", "entry_text", "source", "kind", "held_key")
EVENT_COLUMNS = ("id", "entry_key", "sse_key", "group_no", "kind", "entry_text", "sse_text")


# --- the packed keys ------------------------------------------------------------------------

ORIGIN = datetime(2020, 1, 1, tzinfo=UTC)  # event ids count microseconds from here
SEQ_BITS = 20  # entry key = ms << 20 | seq
_SEQ_MASK = (1 << SEQ_BITS) - 1
_MS_LIMIT = 1 << 43
SLOTS = 15  # writer slots 0-14; 15 is the migration's
_F4 = struct.Struct("<f")
CACHE_MAX = 200_000  # odd keys and float checks kept; past it the cache starts again


class _Bounded(dict[object, object]):
    """A dict that forgets everything once it holds ``CACHE_MAX`` entries (cheap, bounded)."""

    def remember(self, key: object, value: object) -> None:
        if len(self) >= CACHE_MAX:
            self.clear()
        self[key] = value


ODD_KEYS = _Bounded()  # read directly on the hot path: a call less per hit
EXACT = _Bounded()  # float -> float4_exact(float), read by the compiled twin too


def odd_key(uid: str) -> int:
    """The first 8 bytes of md5(id), signed: SQL ``odd_key(id)``."""
    key = ODD_KEYS.get(uid)
    if key is None:
        key = int.from_bytes(hashlib.md5(uid.encode()).digest()[:8], "big", signed=True)
        ODD_KEYS.remember(uid, key)
    return key  # type: ignore[return-value]


def entry_key(entry_id: str) -> tuple[int, str | None]:
    """``'<ms>-<seq>'`` as ms << 20 | seq, ordered like the id; the text too when it is not in
    that canonical form or does not fit (its key is then clamped, and only the text is exact)."""
    ms, sep, seq = entry_id.partition("-")
    if sep and ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii():
        m, s = int(ms), int(seq)
        if m < _MS_LIMIT and s <= _SEQ_MASK and f"{m}-{s}" == entry_id:
            return (m << SEQ_BITS) | s, None
        return (min(m, _MS_LIMIT - 1) << SEQ_BITS) | min(s, _SEQ_MASK), entry_id
    return 0, entry_id


def float4_exact(value: float | None) -> bool:
    """Whether float4 keeps ``value``: its shortest float4 text reads back as ``value``, as
    ``price::text::float8`` does in PostgreSQL. True for American and decimal prices and for
    points; a probability format (1/3 ...) is not, and goes into ``exact``."""
    if value is None:
        return True
    hit = EXACT.get(value)
    if hit is None:
        f4 = _F4.unpack(_F4.pack(value))[0] if abs(value) < 3.4e38 else None
        hit = False
        if f4 is not None:
            for digits in range(1, 10):
                text = f"{f4:.{digits}g}"
                if _F4.unpack(_F4.pack(float(text)))[0] == f4:  # the shortest text of f4
                    hit = float(text) == value
                    break
        EXACT.remember(value, hit)
    return bool(hit)


def received_us(at: datetime) -> int:
    """Microseconds since ``ORIGIN``."""
    delta = at - ORIGIN
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_id(us: int, slot: int, n: int = 0) -> int:
    """``change_events.id``: received microseconds << 8 | writer slot << 4 | n."""
    return (us << 8) | (slot << 4) | n


def main_code(is_main: bool | None) -> int:
    """0 unknown, 1 false, 2 true."""
    return 0 if is_main is None else 2 if is_main else 1


def ev(event: int, kind: Kind, is_main: bool | None) -> int:
    """``odds_changes.ev``: the event id, the kind and the main flag in one bigint."""
    return (event << 4) | (int(kind) << 2) | main_code(is_main)


def day_event_range(day: datetime) -> tuple[int, int]:
    """The ``change_events.id`` range of the events received on ``day`` (a UTC midnight)."""
    lo = received_us(day) << 8
    return lo, lo + (86_400_000_000 << 8)


records, encode_into, changes_payload = pure_records, pure_encode_into, pure_changes_payload
try:
    from ingestor.storage.write import _history
except ImportError:  # built with BUILD_PURE_PYTHON=1 (setup.py)
    COMPILED = False
else:
    COMPILED = True
    records, encode_into = _history.records, _history.encode_into
    changes_payload = _history.changes_payload
