"""Gap recovery: after a (re)connect, fetch the group's current odds over REST and queue them.

The vendor's replay after ``last_entry_id`` is not to be trusted, so every connection is
followed by a snapshot of the group's live and recently finished fixtures. Snapshot rows pass
the same newer-wins merge as streamed ones, so they never overwrite a fresher streamed row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from ingestor.domain.decode import (
    DecodeError,
    decode_snapshot_odd,
    inferred_lock,
    snapshot_fixture,
)
from ingestor.domain.events import SNAPSHOT_EVENT_ID, DecodedEvent, FixtureRow, OddRow
from ingestor.domain.groups import Group
from ingestor.metrics import Metrics
from ingestor.storage import sql
from ingestor.stream.rest import RestClient, RestError

log = structlog.get_logger("ingestor.rehydrate")

FIXTURE_IDS_PER_CALL = 5  # the vendor's cap on the odds endpoints
FINISHED = frozenset({"completed", "cancelled"})
MAX_PAGES = 50


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _matches(row: OddRow, group: Group) -> bool:
    """Apply the stream's own boolean filters to snapshot rows before writing them."""
    s = group.stream
    return not (
        (s.is_main is not None and row.is_main is not None and row.is_main != s.is_main)
        or (s.is_live is not None and row.is_live is not None and row.is_live != s.is_live)
    )


class Rehydrator:
    """Snapshots one group's fixtures' odds into the writer queue."""

    def __init__(
        self, rest: RestClient, pool: Any, queue: Any, metrics: Metrics, window_h: float
    ) -> None:
        self._rest = rest
        self._pool = pool
        self._queue = queue
        self._metrics = metrics
        self._window_h = window_h

    async def run(self, group: Group) -> int:
        """Queue the snapshot of every relevant fixture; returns the odds rows queued."""
        fixture_ids = await self._fixture_ids(group)
        rows = 0
        complete = True
        for chunk in _chunks(fixture_ids, FIXTURE_IDS_PER_CALL):
            try:
                rows += await self._chunk(group, chunk)
            except RestError as exc:
                complete = False
                log.warning("rehydrate_failed", group=group.key, fixtures=chunk, error=str(exc))
        result = "complete" if complete else "partial"
        self._metrics.rehydrations.labels(group.key, result).inc()
        log.info(
            "rehydrate_done", group=group.key, fixtures=len(fixture_ids), rows=rows, result=result
        )
        return rows

    async def _fixture_ids(self, group: Group) -> list[str]:
        at = datetime.now(UTC)
        s = group.stream
        path = "/copilot/fixtures" if s.kind == "copilot" else "/fixtures/active"
        params = [("sport", s.sport), *(("league", lg) for lg in group.leagues)]
        try:
            items = await self._rest.get_pages(path, params, MAX_PAGES)
        except RestError as exc:
            log.warning("rehydrate_fixtures_fallback", group=group.key, error=str(exc))
            async with self._pool.acquire() as conn:
                recs = await conn.fetch(
                    sql.KNOWN_FIXTURES, s.kind, list(group.leagues), self._window_h
                )
            return sorted(r["fixture_id"] for r in recs)
        cutoff = at - timedelta(hours=self._window_h)
        fixtures: list[FixtureRow] = []
        for item in items:
            try:
                fixtures.append(snapshot_fixture(item, at))
            except DecodeError as exc:
                self._metrics.events_rejected.labels(group.key, exc.reason).inc()
        keep = [
            f
            for f in fixtures
            if (f.new_status or "").lower() not in FINISHED
            or (f.start_date is not None and f.start_date >= cutoff)
        ]
        if keep:
            await self._put(group, [], keep)
        return [f.fixture_id for f in keep]

    async def _snapshot(self, group: Group, chunk: list[str]) -> list[dict[str, Any]]:
        s = group.stream
        path = "/copilot/fixtures/odds" if s.kind == "copilot" else "/fixtures/odds"
        params = [("fixture_id", f) for f in chunk]
        params += [("sportsbook", b) for b in s.sportsbooks or ()]
        params += [("market", m) for m in s.markets or ()]
        calls = [params, [*params, ("settled", "true")]] if s.kind == "copilot" else [params]
        odds: list[dict[str, Any]] = []
        for call in calls:
            body = await self._rest.get(path, call)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise RestError(f"GET {path}: no data array in the answer")
            for fixture in data:
                if isinstance(fixture, dict):
                    odds.extend(_with_fixture(fixture))
        return odds

    async def _chunk(self, group: Group, chunk: list[str]) -> int:
        s = group.stream
        # Read what we hold before asking: an odd the stream adds meanwhile is not a candidate.
        async with self._pool.acquire() as conn:
            held = {
                r["id"]: r
                for r in await conn.fetch(
                    sql.ODDS_OF_FIXTURES, chunk, s.kind, s.sportsbooks, s.markets
                )
            }
        at = datetime.now(UTC)
        items = await self._snapshot(group, chunk)
        returned: set[str] = set()
        rows: list[OddRow] = []
        for item in items:
            if isinstance(item.get("id"), str):  # returned, even if it fails to decode
                returned.add(item["id"])
            try:
                row = decode_snapshot_odd(item, s.kind, at)
            except DecodeError as exc:
                self._metrics.events_rejected.labels(group.key, exc.reason).inc()
                continue
            returned.add(row.id)
            # A held odd that left the stream's filter (a main line that moved) is updated,
            # so it does not stay "main" and "open" for ever; a new one outside it is skipped.
            if row.id in held or _matches(row, group):
                rows.append(row)
        rows += [
            inferred_lock(uid, s.kind, r["source_ts"], r["entry_id"], r["order_key"])
            for uid, r in held.items()
            if r["status"] == "open" and uid not in returned
        ]
        if rows:
            await self._put(group, rows, [])
        return len(rows)

    async def _put(self, group: Group, odds: list[OddRow], fixtures: list[FixtureRow]) -> None:
        now = datetime.now(UTC)
        await self._queue.put(
            DecodedEvent(
                group.key,
                SNAPSHOT_EVENT_ID,
                "0-0",
                SNAPSHOT_EVENT_ID,
                now,
                odds=odds,
                fixtures=fixtures,
                advances_cursor=False,
            )
        )


def _with_fixture(fixture: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The fixture's odds, with the fixture's identity filled in where an odd lacks it."""
    odds = fixture.get("odds")
    if not isinstance(odds, list):
        return
    league = fixture.get("league")
    sport = fixture.get("sport")
    defaults = {
        "fixture_id": fixture.get("id"),
        "game_id": fixture.get("game_id"),
        "league": league.get("name") if isinstance(league, dict) else league,
        "sport": sport.get("name") if isinstance(sport, dict) else sport,
    }
    for odd in odds:
        if isinstance(odd, dict):
            yield {**{k: v for k, v in defaults.items() if v is not None}, **odd}
