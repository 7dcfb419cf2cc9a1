"""A running in-process pipeline (feed -> workers -> queue -> writer -> PostgreSQL) for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ingestor.config import (
    RestSettings,
    ServiceSettings,
    StreamConfig,
    StreamSettings,
    WriterSettings,
)
from ingestor.domain.cursors import Cursor
from ingestor.domain.events import EventQueue
from ingestor.domain.groups import Group, make_groups
from ingestor.metrics import Metrics
from ingestor.storage.db import Registered
from ingestor.storage.gaps import PgGapLedger
from ingestor.storage.reader import PgOddsReader
from ingestor.storage.write import Writer
from ingestor.stream.fixtures import FixtureDetails
from ingestor.stream.rehydrate import Rehydrator
from ingestor.stream.repair import GapRepair, RepairParts
from ingestor.stream.rest import WINDOW_S, RequestLimiter, RestClient
from ingestor.stream.worker import Shared, StreamWorker
from ingestor.supervisor import Supervisor
from tests.support.fakefeed import API_KEY


@dataclass
class Pipeline:
    """Handles to every part of one running pipeline."""

    feed: Any
    metrics: Metrics
    queue: EventQueue
    writer: Writer
    workers: list[StreamWorker]
    stop: asyncio.Event
    session: aiohttp.ClientSession
    task: asyncio.Task[int] | None = None
    reader: PgOddsReader | None = None
    ledger: PgGapLedger | None = None
    repair_rest: RestClient | None = None  # the historical budget's client
    gate: RequestLimiter | None = None
    shutdown_timeout_s: float = 10
    details: FixtureDetails | None = None

    async def close(self) -> None:
        """Stop if running, then release the HTTP session and the reader's pool."""
        if self.task and not self.task.done():
            await self.shutdown()
        await self.session.close()
        if self.reader is not None:
            await self.reader.close()
        if self.ledger is not None:
            await self.ledger.close_pool()

    def cursor(self, group_key: str | None = None) -> str | None:
        """The committed entry id of a group (the first by default)."""
        cursor = self.writer.committed(group_key or self.group.key)
        return cursor.entry_id if cursor else None

    @property
    def group(self) -> Group:
        """The first (usually only) group."""
        return self.workers[0].group

    def sample(self, name: str, **labels: str) -> float:
        """A metric's current value (0 when never touched)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def reconnects(self, reason: str) -> float:
        """How often the first group has reconnected for ``reason``."""
        return self.sample("ingestor_stream_reconnects_total", group=self.group.key, reason=reason)

    def rehydrations(self, result: str = "complete") -> float:
        """How many gap recoveries of the first group ended with ``result``."""
        return self.sample("ingestor_rehydrations_total", group=self.group.key, result=result)

    def start(self, supervisor: Supervisor) -> None:
        """Run the supervisor in the background."""
        self.task = asyncio.create_task(supervisor.run(), name="test-supervisor")

    async def shutdown(self) -> int:
        """Signal stop and wait for the drain."""
        self.stop.set()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 20)


def copilot_stream(leagues: list[str] | None = None) -> StreamConfig:
    """A copilot basketball stream config."""
    return StreamConfig(kind="copilot", sport="basketball", leagues=leagues or ["NBA"])


async def build_pipeline(
    database_url: str,
    feed: Any,
    *,
    streams: list[StreamConfig] | None = None,
    queue_max_events: int = 1000,
    cursors: dict[str, Cursor] | None = None,
    worker_class: type[StreamWorker] = StreamWorker,
    rehydrate: bool = False,
    **stream_settings: Any,
) -> Pipeline:
    """Wire the real parts together exactly as the composition root does; ``stream_settings``
    (``stall_timeout_s=...``) override the workers' test defaults."""
    metrics = Metrics()
    stop = asyncio.Event()
    queue: EventQueue = asyncio.Queue(maxsize=queue_max_events)
    session = aiohttp.ClientSession()
    knobs: dict[str, Any] = {
        "api_base_url": feed.base_url,
        "api_key": API_KEY,
        "max_event_bytes": 1 << 20,
        "stall_timeout_s": 5.0,
        "connect_timeout_s": 5.0,
        "reconnect_initial_s": 0.01,
        "reconnect_max_s": 0.05,
        **stream_settings,
    }
    settings = StreamSettings(**knobs)
    groups = make_groups(streams or [copilot_stream()], 10)
    reader = None
    rehydrator = details = None
    rest_settings = RestSettings(
        api_base_url=feed.base_url,
        api_key=knobs["api_key"],
        rest_timeout_s=10,
        rehydrate_retry_s=0.2,
    )
    rest = RestClient(session, rest_settings, RequestLimiter(2000), metrics)
    if rehydrate:
        details = FixtureDetails(rest, queue, metrics)
    writer = Writer(
        database_url,
        queue,
        metrics,
        WriterSettings(writer_batch_max_rows=5000, flush_retry_max_s=0.5),
        registered=Registered(cursors or {}, {}),
        on_new_fixtures=details.notice if details is not None else None,
    )
    if rehydrate:
        reader = PgOddsReader(database_url)
        rehydrator = Rehydrator(rest, reader, queue, metrics, rest_settings, writer.flushed)
    ledger = PgGapLedger(database_url)
    gate = RequestLimiter(200)
    shared = Shared(session, settings, queue, metrics, writer, stop, gate, rehydrator, ledger)
    workers = [worker_class(g, shared) for g in groups]
    return Pipeline(
        feed,
        metrics,
        queue,
        writer,
        workers,
        stop,
        session,
        reader=reader,
        ledger=ledger,
        repair_rest=RestClient(
            session,
            rest_settings,
            RequestLimiter(_budget(feed), window_s=WINDOW_S + 1),
            metrics,
        ),
        gate=gate,
        details=details,
    )


def _budget(feed: Any) -> int:
    """The historical budget the feed grants (the simulator's may be raised by a test), as
    a user sets ``historical_requests_per_15s`` to their vendor's."""
    server = getattr(feed, "server", None)
    faults = getattr(server, "faults", None)
    return int(getattr(faults, "historical_calls_per_window", 10))


def supervise(p: Pipeline, **kw: Any) -> Supervisor:
    """A supervisor over the pipeline's parts, started."""
    settings = ServiceSettings(
        shutdown_timeout_s=p.shutdown_timeout_s,
        worker_restart_max_s=kw.get("restart_max_s", 0.6),
    )
    sup = Supervisor(p.writer, p.workers, p.metrics, p.stop, settings)
    if p.details is not None:
        sup.watch("fixture-details", p.details.run)
    if p.ledger is not None and p.repair_rest is not None:  # as the composition root does
        copilot = frozenset(w.group.key for w in p.workers if w.group.stream.kind == "copilot")
        parts = RepairParts(p.repair_rest, p.ledger, p.queue, p.writer, sup.owned, copilot)
        sup.watch("gap-repair", GapRepair(parts, p.metrics, p.stop).run)
    p.start(sup)
    return sup


# What the `make_pipeline` and `running` fixtures (tests/conftest.py) hand a test.
PipelineFactory = Callable[..., Awaitable[Pipeline]]
SimPipelineFactory = Callable[..., Awaitable[tuple[Any, Pipeline]]]
