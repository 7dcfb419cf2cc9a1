"""Composition root: the only place that wires config, stream, storage and metrics together.

``run_daemon`` is three steps: start-up (every check and every side effect before streaming:
the metrics port, the database, its schema and grants, the first partition round), building
the parts (wiring only, no I/O), serving until SIGTERM. Every resource is held by one
``AsyncExitStack``, so a start that fails half way releases what it had already opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import structlog

from ingestor.config import Settings
from ingestor.coordination import Coordinator
from ingestor.domain.events import ROWS_COMPILED, EventQueue
from ingestor.domain.fast import COMPILED as FAST_COMPILED
from ingestor.domain.groups import Group, make_groups
from ingestor.logs import register_secret
from ingestor.metrics import Metrics
from ingestor.ports import LostGroups
from ingestor.progress import progress_loop
from ingestor.readiness import Readiness
from ingestor.storage import db
from ingestor.storage.gaps import PgGapLedger
from ingestor.storage.leases import PgLeases
from ingestor.storage.partitions import Upkeep
from ingestor.storage.reader import PgOddsReader
from ingestor.storage.write import COMPILED as WRITE_COMPILED
from ingestor.storage.write import Writer
from ingestor.stream.fixtures import FixtureDetails
from ingestor.stream.rehydrate import Rehydrator
from ingestor.stream.repair import GapRepair, RepairParts
from ingestor.stream.rest import WINDOW_S, RequestLimiter, RestClient
from ingestor.stream.sse import COMPILED as SSE_COMPILED
from ingestor.stream.worker import Shared, StreamWorker
from ingestor.supervisor import Supervisor
from ingestor.web import Probes, open_port

# The hot path's compiled twins (setup.py): the SSE scanner's, the decoder's, the write path's.
COMPILED = SSE_COMPILED and ROWS_COMPILED and FAST_COMPILED and WRITE_COMPILED

log = structlog.get_logger("ingestor.app")


def _password(dsn: str) -> str | None:
    """The password inside a postgresql:// URL, so that the log scrubber knows it."""
    try:
        return urlsplit(dsn).password
    except ValueError:
        return None


@contextlib.contextmanager
def _tuned_gc() -> Iterator[None]:
    """Fewer cyclic collections: the hot path makes millions of short-lived tuples, which
    reference counting frees; measured 8% less daemon CPU at 30k odds/s. Undone on exit, so
    that a caller running the daemon in its own process (the tests) gets its settings back."""
    before = gc.get_threshold()
    gc.freeze()  # what start-up built lives as long as the process: never scan it again
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@dataclass(frozen=True)
class Started:
    """What start-up found and opened: the groups' committed cursors and numbers, the
    partition upkeep (its first round done) and the probes of the metrics port."""

    registered: db.Registered
    upkeep: Upkeep | None
    probes: Probes


async def start_up(
    settings: Settings, groups: list[Group], metrics: Metrics, stack: contextlib.AsyncExitStack
) -> Started:
    """Step 1, every side effect before streaming. The metrics port first: a second daemon
    on the same port fails at once, before touching the database. Then the database
    answers, its schema is this build's, the role may write, the groups are registered, and
    today's partitions exist before the first flush (no upkeep DDL racing it). Never
    migrates unless asked."""
    probes = Probes()
    stack.push_async_callback(
        await open_port(metrics, probes, settings.metrics_host, settings.metrics_port)
    )
    registered = await db.start_up(settings, groups)
    upkeep = None
    if settings.manage_partitions:
        url = settings.maintenance_database_url or settings.database_url
        upkeep = Upkeep(url.get_secret_value(), settings)
        await upkeep.round()
    return Started(registered, upkeep, probes)


@dataclass
class Daemon:
    """The built parts that serving needs."""

    supervisor: Supervisor
    readiness: Readiness


def build(
    settings: Settings,
    groups: list[Group],
    metrics: Metrics,
    started: Started,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> Daemon:
    """Step 2: every part, wired (no I/O); the resources they hold are closed by ``stack``."""
    dsn = settings.database_url.get_secret_value()
    queue: EventQueue = asyncio.Queue(maxsize=settings.queue_max_events)
    metrics.queue_capacity.set(settings.queue_max_events)
    # Streams hold their connections for good: no pool cap, or group 101 would starve.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    stack.push_async_callback(session.close)
    ledger = PgGapLedger(dsn)
    stack.push_async_callback(ledger.close_pool)
    lost = LostGroups()  # fenced groups: the writer reports them, the coordinator gives up
    rest = RestClient(session, settings, RequestLimiter(settings.rest_requests_per_15s), metrics)
    details = FixtureDetails(rest, queue, metrics) if settings.rehydrate else None
    writer = Writer(
        dsn,
        queue,
        metrics,
        settings,
        registered=started.registered,
        on_new_fixtures=details.notice if details is not None else None,
        lost=lost,
    )
    rehydrator = None
    if settings.rehydrate:  # every REST call of the process: gap recovery, fixture details
        reader = PgOddsReader(dsn)
        stack.push_async_callback(reader.close)
        rehydrator = Rehydrator(rest, reader, queue, metrics, settings, writer.flushed)
    gate = RequestLimiter(settings.stream_connects_per_15s)
    shared = Shared(session, settings, queue, metrics, writer, stop, gate, rehydrator, ledger)
    workers = [StreamWorker(g, shared) for g in groups]
    supervisor = Supervisor(writer, workers, metrics, stop, settings, workers_on_demand=True)
    supervisor.watch("progress", lambda: progress_loop(metrics, stop, settings.progress_log_s))
    if details is not None:
        supervisor.watch("fixture-details", details.run)
    if started.upkeep is not None:
        upkeep = started.upkeep
        supervisor.watch("partitions", lambda: upkeep.loop(stop))
    # Gap repair: the vendor's history of each odd, within its own budget.
    # A second of margin on the window: our clock starts a call's 15 s when it leaves, the
    # vendor's when it arrives (a call at the edge of a window was refused so, measured).
    historical = RequestLimiter(settings.historical_requests_per_15s, window_s=WINDOW_S + 1)
    copilot = frozenset(g.key for g in groups if g.stream.kind == "copilot")
    parts = RepairParts(
        RestClient(session, settings, historical, metrics),
        ledger,
        queue,
        writer,
        supervisor.owned,
        copilot,
    )
    repair = GapRepair(parts, metrics, stop)
    supervisor.watch("gap-repair", repair.run)
    coordinator = Coordinator(
        PgLeases(dsn), [g.key for g in groups], supervisor, metrics, settings, stop, lost
    )
    supervisor.watch("leases", coordinator.run)
    # Closed after the final flush: the claims outlive it, so no successor starts behind it.
    stack.push_async_callback(coordinator.close)
    pinger = db.Pinger(dsn)
    stack.push_async_callback(pinger.close)
    readiness = Readiness(settings, pinger, writer, supervisor, coordinator)
    if settings.in_demo:
        metrics.demo_mode.set(1)
    return Daemon(supervisor, readiness)


def _announce(settings: Settings, groups: list[Group], started: Started) -> None:
    if settings.in_demo:
        log.warning(
            "demo_mode",
            message="reading the SIMULATOR, not the real feed",
            api_base_url=settings.effective_api_base_url,
        )
    elif settings.demo_api_base_url:
        log.warning(
            "demo_url_ignored",
            message="OPTICODDS_API_KEY is set, so demo_api_base_url is not used: reading the "
            "real feed (set demo = true to read the simulator anyway)",
            api_base_url=settings.effective_api_base_url,
        )
    log.info(
        "daemon_started",
        groups=[g.key for g in groups],
        api_base_url=settings.effective_api_base_url,
        demo=settings.in_demo,
        coordination=settings.coordination,
        metrics_port=settings.metrics_port,
        resumed_cursors=len(started.registered.cursors),
        compiled=COMPILED,
    )


async def serve(daemon: Daemon, stop: asyncio.Event) -> int:
    """Step 3: run until SIGTERM/SIGINT, then drain (stop reading, flush, commit)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets the event: draining happens in the supervisor, in order.
        loop.add_signal_handler(sig, stop.set)
    try:
        with _tuned_gc():
            return await daemon.supervisor.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_daemon(settings: Settings) -> int:
    """Start everything, run until SIGTERM/SIGINT, drain, and return the exit code."""
    register_secret(settings.key)
    register_secret(_password(settings.database_url.get_secret_value()))
    if settings.maintenance_database_url:
        register_secret(_password(settings.maintenance_database_url.get_secret_value()))
    groups = make_groups(settings.streams, settings.leagues_per_connection)
    metrics = Metrics()
    metrics.build_info.labels(compiled=str(COMPILED).lower()).set(1)  # all twins or none
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        started = await start_up(settings, groups, metrics, stack)
        daemon = build(settings, groups, metrics, started, stop, stack)
        started.probes.answer_with(daemon.readiness.check)
        _announce(settings, groups, started)
        code = await serve(daemon, stop)
    log.info("daemon_stopped", exit_code=code)
    return code
