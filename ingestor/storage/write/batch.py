"""Turns a list of decoded events into the COPY records of one flush."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ingestor.domain.events import (
    SNAPSHOT_EVENT_ID,
    DeadLetter,
    DecodedEvent,
    FixtureRow,
    GapStart,
    Kind,
    OddRow,
)
from ingestor.storage.write import pgcopy
from ingestor.storage.write.history import ODD_KEYS, HistoryBatch, odd_key

Record = tuple[Any, ...]


class Newest(Protocol):
    """The newest state of one odd within a batch (``collapse``): a row per order key."""

    @property
    def latest(self) -> OddRow: ...
    @property
    def priced(self) -> OddRow | None: ...
    @property
    def settled(self) -> OddRow | None: ...


@dataclass(slots=True)
class CursorAdvance:
    """The newest entry a batch holds for one connection group."""

    group_key: str
    entry_id: str
    event_id: str
    key: bytes
    event_at: datetime


@dataclass(slots=True)
class FlushBatch:
    """Everything one transaction writes."""

    # Events with odds: their history, encoded ahead when it can be (history.py).
    history_events: list[DecodedEvent] = field(default_factory=list)
    history: HistoryBatch | None = None
    odds: Sequence[Newest] = field(default_factory=list)  # current state: current_payload
    fixture_history: list[Record] = field(default_factory=list)
    fixtures: list[Record] = field(default_factory=list)
    cursors: list[CursorAdvance] = field(default_factory=list)
    # The gaps of the connections whose first events the batch commits: recorded in the
    # transaction that moves their cursors (with ``cursors``).
    gaps: list[tuple[str, GapStart]] = field(default_factory=list)
    dead_letters: list[Record] = field(default_factory=list)
    # The fixture of every odd (fixture id -> its identity, from the odd's own fields), so
    # that each one has a `fixtures` row once the odd is committed.
    fixture_stubs: dict[str, FixtureStub] = field(default_factory=dict)
    streamed: list[DecodedEvent] = field(default_factory=list)  # for the lag histogram
    stream_events: int = 0
    # Read off the events in the one pass that sorts them (each was a pass of its own, per
    # flush: together 1.5% of the daemon's CPU): the groups of ``history_events``, their odds,
    # and every (group, epoch) the batch's events were read under (the flush fences them).
    groups: set[str] = field(default_factory=set)
    odd_count: int = 0
    epochs: set[tuple[str, int]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class FixtureStub:
    """What an odd says of its fixture, enough for a row until the details arrive."""

    fixture_id: str
    game_id: str | None
    sport: str | None
    league: str | None
    source_ts: datetime
    entry_id: str
    stream: str


@dataclass(slots=True)
class _Current:
    """The newest state of one odd within a batch, one part per order key."""

    latest: OddRow
    priced: OddRow | None
    settled: OddRow | None


def _current_record(cur: Newest) -> Record:
    r, p, s = cur.latest, cur.priced, cur.settled
    return (
        r.id,
        r.odd_id,
        r.stream,
        r.sportsbook,
        r.fixture_id,
        r.game_id,
        r.sport,
        r.league,
        r.market,
        r.name,
        r.selection,
        r.player_id,
        r.team_id,
        r.version_id,
        p.points if p else None,
        p.price if p else None,
        p.is_main if p else None,
        p.is_live if p else None,
        p.grouping_key if p else None,
        p.selection_line if p else None,
        s.settlement if s else None,
        s.settled_at if s else None,
        r.kind.status,
        r.source_ts,
        r.entry_id,
        r.order_key,
        p.order_key if p else None,
        s.order_key if s else None,
        ODD_KEYS.get(r.id) or odd_key(r.id),  # a call less on the usual hit
    )


def _fixture_records(rows: list[tuple[FixtureRow, str, datetime]]) -> tuple[list[Record], ...]:
    history: list[Record] = []
    latest: dict[str, FixtureRow] = {}
    status: dict[str, FixtureRow] = {}
    for f, group_key, received_at in rows:
        if f.event_id != SNAPSHOT_EVENT_ID:  # a REST listing is state, not a status change
            history.append(
                (
                    f.fixture_id,
                    f.game_id,
                    f.sport,
                    f.league,
                    f.old_status,
                    f.new_status,
                    f.old_start_date,
                    f.new_start_date,
                    f.source_ts,
                    f.entry_id,
                    group_key,
                    received_at,
                )
            )
        seen = latest.get(f.fixture_id)
        if seen is None or f.order_key >= seen.order_key:
            latest[f.fixture_id] = f
        if f.new_status is not None:
            seen = status.get(f.fixture_id)
            if seen is None or f.order_key >= seen.order_key:
                status[f.fixture_id] = f
    current: list[Record] = []
    for fid, f in latest.items():
        st = status.get(fid)
        current.append(
            (
                fid,
                f.game_id,
                f.sport,
                f.league,
                f.home_team_display,
                f.away_team_display,
                f.start_date,
                st.new_status.lower() if st and st.new_status else None,
                f.source_ts,
                f.entry_id,
                f.order_key,
                st.order_key if st else None,
            )
        )
    return history, current


def _letter(d: DeadLetter) -> Record:
    return (d.group_key, d.event_type, d.event_id, d.reason, d.detail, d.payload, d.received_at)


def _cursor(ev: DecodedEvent) -> CursorAdvance:
    return CursorAdvance(ev.group_key, ev.entry_id, ev.event_id, ev.position_key(), ev.received_at)


def build_batch(events: list[DecodedEvent]) -> FlushBatch:
    """History records for every row, one current record per odd/fixture, one cursor per group."""
    batch = FlushBatch()
    newest, fixture_rows = _sort(events, batch)
    batch.odds, batch.fixture_stubs = collapse(batch.history_events)
    batch.fixture_history, batch.fixtures = _fixture_records(fixture_rows)
    batch.cursors = [_cursor(ev) for _, ev in newest.values()]
    return batch


def _sort(
    events: list[DecodedEvent], batch: FlushBatch
) -> tuple[dict[str, tuple[tuple[int, int], DecodedEvent]], list[tuple[FixtureRow, str, datetime]]]:
    """The one pass over the events: into ``batch`` the streamed ones, those with odds (their
    groups and odd count), the epochs, the dead letters; returned, the event with the highest
    entry of each group (ties: the later one, its cursor) and the fixture rows."""
    newest: dict[str, tuple[tuple[int, int], DecodedEvent]] = {}
    fixture_rows: list[tuple[FixtureRow, str, datetime]] = []
    streamed, history, groups, epochs = batch.streamed, batch.history_events, batch.groups, set()
    odds = 0
    for ev in events:
        key = ev.group_key
        if ev.epoch:
            epochs.add((key, ev.epoch))
        if ev.advances_cursor:
            position = ev.entry or ev.position()
            seen = newest.get(key)
            if seen is None or position >= seen[0]:
                newest[key] = (position, ev)
            streamed.append(ev)
            if ev.gaps:
                batch.gaps.extend((key, gap) for gap in ev.gaps)
        if ev.fixtures:
            fixture_rows.extend((f, key, ev.received_at) for f in ev.fixtures)
        if ev.dead_letters:
            batch.dead_letters.extend(_letter(d) for d in ev.dead_letters)
        if ev.odds:
            history.append(ev)
            groups.add(key)
            odds += len(ev.odds)
    batch.stream_events, batch.odd_count, batch.epochs = len(streamed), odds, epochs
    return newest, fixture_rows


def pure_collapse(events: list[DecodedEvent]) -> tuple[list[_Current], dict[str, FixtureStub]]:
    """The newest state of every odd of ``events`` (the newest row, and the newest of each
    part by its own order key), and the fixture of every odd."""
    current: dict[str, _Current] = {}
    for ev in events:
        for r in ev.odds:
            cur = current.get(r.id)
            if cur is None:
                cur = current[r.id] = _Current(r, None, None)
            # No filling from older rows of the batch: a late replay in the same batch would
            # bring back values the stored row has already replaced (COALESCE in the merge
            # keeps stored values where the newest event is silent).
            if r.order_key >= cur.latest.order_key:
                cur.latest = r
            if r.kind is Kind.SETTLED and (
                cur.settled is None or r.order_key >= cur.settled.order_key
            ):
                cur.settled = r
            if r.carries_price and (cur.priced is None or r.order_key >= cur.priced.order_key):
                cur.priced = r
    return list(current.values()), _stubs(current.values())


def current_records(newest: Iterable[Newest]) -> list[Record]:
    """The current-state records (``sql.ODDS_COLUMNS``) of ``collapse``'s newest states."""
    return [_current_record(c) for c in newest]


def pure_current_payload(newest: Sequence[Newest], codes: str) -> bytes:
    """The binary COPY stream of the current-state rows (``codes``: statements.ODDS)."""
    return pgcopy.pure_payload(current_records(newest), codes)


def pure_lag_counts(
    events: list[DecodedEvent], now: datetime, bounds: Sequence[float]
) -> tuple[list[int], float]:
    """The lag (``now`` - source time) of every odd of ``events``, counted per bucket of
    ``bounds`` (the first bound at least the lag) and summed: what the lag histogram adds."""
    times: dict[datetime, int] = {}
    for ev in events:
        for r in ev.odds:
            times[r.source_ts] = times.get(r.source_ts, 0) + 1
    counts = [0] * len(bounds)
    total = 0.0
    for t, n in times.items():
        lag = (now - t).total_seconds()
        counts[bisect_left(bounds, lag)] += n
        total += lag * n
    return counts, total


def _stubs(current: Iterable[_Current]) -> dict[str, FixtureStub]:
    stubs: dict[str, FixtureStub] = {}
    for c in current:
        r = c.priced or c.settled or c.latest  # an inferred lock carries no identity
        if r.fixture_id is not None and r.fixture_id not in stubs:
            stubs[r.fixture_id] = FixtureStub(
                r.fixture_id, r.game_id, r.sport, r.league, r.source_ts, r.entry_id or "", r.stream
            )
    return stubs


def build_batches(events: list[DecodedEvent], shards: int) -> list[FlushBatch]:
    """One batch per writer connection. With two or more, the history rows get a connection
    of their own (the last), and the current-state rows are split by odd id over the others;
    fixtures, dead letters and every cursor are in the first, which commits last."""
    if shards <= 2:
        batches = [build_batch(events)]
        if shards == 2:
            # History goes apart: its COPY and the merge then run at once, in two backends.
            # The snapshot rows' check still sees `odds` as before the batch, because the
            # first connection (merge included) commits only after the other one has.
            first = batches[0]
            batches.append(
                FlushBatch(
                    history_events=first.history_events,
                    groups=first.groups,
                    odd_count=first.odd_count,
                )
            )
            first.history_events, first.groups, first.odd_count = [], set(), 0
        return batches
    odds_shards = shards - 1
    split: list[list[DecodedEvent]] = [[] for _ in range(odds_shards)]
    for ev in events:
        parts: list[list[OddRow]] = [[] for _ in range(odds_shards)]
        for row in ev.odds:
            # Within one batch an odd always lands on one shard: no two connections ever
            # touch the same row at once. Batches run one after the other, so the choice
            # need not be stable across processes (str hashes are salted).
            parts[hash(row.id) % odds_shards].append(row)
        split[0].append(_part(ev, parts[0], keep_rest=True))
        for i in range(1, odds_shards):
            if parts[i]:
                split[i].append(_part(ev, parts[i], keep_rest=False))
    batches = [build_batch(evs) for evs in split]
    whole = FlushBatch()
    _sort(events, whole)
    # The lag counts every streamed odd once: the parts on the other shards do not advance
    # the cursor, so the first batch counts the whole events (it counted only its part); the
    # parts carry no epoch, the whole events do.
    batches[0].streamed, batches[0].epochs = whole.streamed, whole.epochs
    batches[0].gaps = whole.gaps
    # History goes apart, as with two connections.
    history = FlushBatch(
        history_events=whole.history_events, groups=whole.groups, odd_count=whole.odd_count
    )
    for b in batches:
        b.history_events, b.groups, b.odd_count = [], set(), 0
    for b in batches[1:]:  # one connection writes fixtures: no two wait on one new row
        batches[0].fixture_stubs.update(b.fixture_stubs)
        b.fixture_stubs = {}
    return [*batches, history]


def _part(ev: DecodedEvent, odds: list[OddRow], *, keep_rest: bool) -> DecodedEvent:
    return DecodedEvent(
        ev.group_key,
        ev.event_type,
        ev.entry_id,
        ev.event_id,
        ev.received_at,
        odds=odds,
        fixtures=ev.fixtures if keep_rest else [],
        advances_cursor=ev.advances_cursor and keep_rest,
        dead_letters=ev.dead_letters if keep_rest else [],
    )


collapse = pure_collapse
current_payload = pure_current_payload
lag_counts = pure_lag_counts
try:
    from ingestor.storage.write._batch import collapse as _compiled
    from ingestor.storage.write._batch import current_payload as _compiled_payload
    from ingestor.storage.write._batch import lag_counts as _compiled_lags
except ImportError:  # built with BUILD_PURE_PYTHON=1 (setup.py)
    COMPILED = False
else:
    COMPILED = True
    collapse = _compiled  # type: ignore[assignment]  # its own newest-state class
    current_payload = _compiled_payload
    lag_counts = _compiled_lags
