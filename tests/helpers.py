"""Builders shared by the tests: decoded events from vendor-shaped payloads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestor.domain.cursors import Cursors
from ingestor.domain.decode import decode_event
from ingestor.domain.events import DecodedEvent, EventQueue
from ingestor.metrics import Metrics
from ingestor.storage.writer import Writer

GROUP = "copilot:basketball:NBA"


def event(
    event_type: str,
    entry_id: str,
    odds: list[dict[str, Any]] | None = None,
    *,
    group: str = GROUP,
    stream: str = "copilot",
    payload: dict[str, Any] | None = None,
) -> DecodedEvent:
    """Decode a payload the way a worker would."""
    body = payload if payload is not None else {"entry_id": entry_id, "data": odds or []}
    return decode_event(group, stream, event_type, orjson.dumps(body), entry_id, datetime.now(UTC))


async def write_batches(
    database_url: str,
    *batches: list[DecodedEvent],
    metrics: Metrics | None = None,
    connections: int = 1,
) -> Cursors:
    """Run a real writer once per batch (each batch is one flush); returns committed cursors."""
    committed = Cursors()
    for batch in batches:
        queue: EventQueue = asyncio.Queue()
        for ev in batch:
            queue.put_nowait(ev)
        queue.put_nowait(None)
        writer = Writer(
            database_url,
            queue,
            metrics or Metrics(),
            batch_max_rows=1_000_000,
            retry_max_s=1,
            cursors=committed,
            connections=connections,
        )
        await writer.run()
        assert writer.flushes >= 1
    return committed
