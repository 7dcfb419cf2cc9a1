"""Details of fixtures first seen between two connects: names, start time and status.

An odd's fixture gets a row from the odd's own fields when the odd is committed (the writer
does that); the rest only REST knows. Gap recovery lists every fixture at each connect, so this
fills the gap for fixtures that appear after it, a few ids per call, paced with every other
REST call of the process. Never fatal: the next connect's listing fills whatever failed here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from ingestor.domain.decode import snapshot_fixture
from ingestor.domain.errors import DecodeError
from ingestor.domain.events import DecodedEvent, EventQueue, FixtureRow
from ingestor.metrics import Metrics
from ingestor.stream.rehydrate import FIXTURES_PATH
from ingestor.stream.rest import RestClient, RestError

log = structlog.get_logger("ingestor.fixtures")

IDS_PER_CALL = 5
GROUP = "fixture-details"  # the events it queues belong to no stream group


class FixtureDetails:
    """Asks REST about fixtures the writer reports as new; queues what it learns."""

    def __init__(
        self, rest: RestClient, queue: EventQueue, metrics: Metrics, backlog: int = 5000
    ) -> None:
        self._rest = rest
        self._queue = queue
        self._metrics = metrics
        self._wanted: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=backlog)

    def notice(self, fixtures: list[tuple[str, str]]) -> None:
        """(stream, fixture id) of new fixtures; called by the writer after its commit."""
        for item in fixtures:
            try:
                self._wanted.put_nowait(item)
            except asyncio.QueueFull:
                self._metrics.fixture_details.labels("dropped").inc()

    async def run(self) -> None:
        """Until cancelled: take what is wanted, a few at a time, per stream kind."""
        while True:
            first = await self._wanted.get()
            batch = [first]
            while len(batch) < IDS_PER_CALL and not self._wanted.empty():
                batch.append(self._wanted.get_nowait())
            for stream in {s for s, _ in batch}:
                await self._ask(stream, [f for s, f in batch if s == stream])

    async def _ask(self, stream: str, fixture_ids: list[str]) -> None:
        at = datetime.now(UTC)
        try:
            items = await self._rest.get_pages(
                FIXTURES_PATH[stream], [("id", f) for f in fixture_ids], max_pages=1
            )
        except RestError as exc:
            self._metrics.fixture_details.labels("failed").inc(len(fixture_ids))
            log.warning("fixture_details_failed", fixtures=fixture_ids, error=str(exc))
            return
        rows: list[FixtureRow] = []
        for item in items:
            try:
                row = snapshot_fixture(item, at)
            except DecodeError:
                continue
            if row.fixture_id in fixture_ids:
                rows.append(row)
        self._metrics.fixture_details.labels("found").inc(len(rows))
        if rows:
            await self._queue.put(DecodedEvent.snapshot(GROUP, at, fixtures=rows))
