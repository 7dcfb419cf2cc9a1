"""Composition root: the only place that wires config, stream, storage and metrics together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import structlog

from ingestor.config import Settings
from ingestor.coordination import Coordinator
from ingestor.domain.groups import make_groups
from ingestor.logs import register_secret
from ingestor.metrics import Metrics
from ingestor.storage import db, partitions, sql
from ingestor.storage.migrations import head_revision, upgrade
from ingestor.storage.writer import Writer, WriterQueue
from ingestor.stream.rehydrate import Rehydrator
from ingestor.stream.rest import RequestLimiter, RestClient
from ingestor.stream.worker import StreamWorker, WorkerSettings, sleep_or_stop
from ingestor.supervisor import Supervisor
from ingestor.web import make_app, start

log = structlog.get_logger("ingestor.app")


def _password(dsn: str) -> str | None:
    """The password inside a postgresql:// URL, so that the log scrubber knows it."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(dsn).password
    except ValueError:
        return None


async def maintain_partitions(settings: Settings) -> dict[str, list[str]]:
    """One round of history partition upkeep, as the owner when one is configured."""
    url = (settings.maintenance_database_url or settings.database_url).get_secret_value()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await partitions.maintain(
            conn,
            today=datetime.now(UTC).date(),
            ahead_days=settings.partitions_ahead_days,
            retention_days=settings.history_retention_days,
        )
    finally:
        await conn.close(timeout=5)


# After a failed round, the next comes this soon (a busy table frees up in seconds).
PARTITIONS_RETRY_S = 60.0
# A database that stops answering must not hold a round (and start-up) for ever.
PARTITIONS_ROUND_TIMEOUT_S = 300.0


async def _partitions_round(settings: Settings) -> bool:
    """One logged round of partition upkeep; False when it failed. Never fatal."""
    try:
        async with asyncio.timeout(PARTITIONS_ROUND_TIMEOUT_S):
            done = await maintain_partitions(settings)
        log.info("partitions_maintained", **done)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Without it rows still land in the default partition: nothing is lost.
        busy = isinstance(exc, asyncpg.LockNotAvailableError)
        log.warning(
            "partitions_failed",
            error=type(exc).__name__,
            detail=str(exc)[:300],
            hint=(
                "a history table stayed locked past the upkeep's lock timeout; retried soon"
                if busy
                else "partition DDL needs the tables' owner: set maintenance_database_url"
            ),
        )
        return False
    return True


async def _partitions_loop(settings: Settings, stop: asyncio.Event, done: bool) -> None:
    """Keep history day partitions ahead and within the retention, after a first round."""
    while True:
        wait = settings.partition_check_s
        if not done:
            wait = min(wait, PARTITIONS_RETRY_S)
        if await sleep_or_stop(stop, wait):
            return
        done = await _partitions_round(settings)


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


def _worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        base_url=settings.effective_api_base_url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        max_event_bytes=settings.max_event_bytes,
        stall_timeout_s=settings.stall_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        reconnect_initial_s=settings.reconnect_initial_s,
        reconnect_max_s=settings.reconnect_max_s,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        auth_retry_max_s=settings.auth_retry_max_s,
        no_data_warning_s=settings.no_data_warning_s,
    )


def _readiness(
    settings: Settings,
    pool: Callable[[], asyncpg.Pool],
    writer: Writer,
    workers: list[StreamWorker],
) -> Callable[[], Awaitable[str | None]]:
    """/readyz: the database answers, commits happen, and no group fails past the bound."""

    async def ready() -> str | None:
        try:
            async with asyncio.timeout(2):
                await pool().fetchval(sql.PING)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return f"database unreachable ({type(exc).__name__})"
        stalled = writer.stall_s()
        if stalled > settings.ready_commit_wait_s:
            # Health must not stay green while nothing is stored (a missing grant did that).
            return (
                f"no commit for {stalled:.0f} s while {writer.queue.qsize() + writer.held} "
                f"events wait (last flush error: {writer.last_error or 'none, still running'})"
            )
        failing = [w.group.key for w in workers if w.failures >= settings.ready_max_failures]
        return f"groups failing: {', '.join(failing)}" if failing else None

    return ready


async def run_daemon(settings: Settings) -> int:
    """Start everything, run until SIGTERM/SIGINT, drain, and return the exit code."""
    dsn = settings.database_url.get_secret_value()
    register_secret(settings.api_key.get_secret_value() if settings.api_key else None)
    register_secret(_password(dsn))
    if settings.maintenance_database_url:
        register_secret(_password(settings.maintenance_database_url.get_secret_value()))
    groups = make_groups(settings.streams, settings.leagues_per_connection)
    conn = await db.connect_with_wait(dsn, settings.database_wait_s)
    try:
        if settings.migrate_on_start:  # only when asked: never migrate silently
            await asyncio.to_thread(upgrade, dsn)
            log.info("schema_migrated", revision=head_revision())
        await db.check_schema(conn, head_revision())
        await db.check_privileges(conn)
        cursors = await db.register_groups(conn, groups)
    finally:
        await conn.close()
    # Today's partitions exist before the first flush: no upkeep DDL racing it at start-up.
    partitioned = await _partitions_round(settings) if settings.manage_partitions else True

    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets the event: draining happens in the supervisor, in order.
        loop.add_signal_handler(sig, stop.set)

    queue: WriterQueue = asyncio.Queue(maxsize=settings.queue_max_events)
    metrics.queue_capacity.set(settings.queue_max_events)
    if settings.demo:
        metrics.demo_mode.set(1)
        log.warning(
            "demo_mode",
            message="OPTICODDS_API_KEY is not set: reading the SIMULATOR, not the real feed",
            api_base_url=settings.effective_api_base_url,
        )
    writer = Writer(
        dsn,
        queue,
        metrics,
        batch_max_rows=settings.writer_batch_max_rows,
        retry_max_s=settings.flush_retry_max_s,
        cursors=cursors,
        flush_timeout_s=settings.flush_timeout_s,
        connections=settings.writer_connections,
    )

    workers: list[StreamWorker] = []

    ready = _readiness(settings, lambda: pool, writer, workers)

    # Gap recovery and /readyz read through a small pool; the writer has its own connection.
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    runner = await start(make_app(metrics, ready), settings.metrics_host, settings.metrics_port)
    log.info(
        "daemon_started",
        groups=[g.key for g in groups],
        api_base_url=settings.effective_api_base_url,
        demo=settings.demo,
        metrics_port=settings.metrics_port,
        resumed_cursors=len(cursors),
    )
    try:
        # Streams hold their connections for good: no pool cap, or group 101 would starve.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            worker_settings = _worker_settings(settings)
            rehydrator = None
            if settings.rehydrate:
                rest = RestClient(
                    session,
                    worker_settings.base_url,
                    worker_settings.api_key,
                    RequestLimiter(settings.rest_requests_per_15s),
                    metrics,
                    settings.rest_timeout_s,
                )
                rehydrator = Rehydrator(rest, pool, queue, metrics, settings.rehydrate_window_h)
            gate = RequestLimiter(settings.stream_connects_per_15s)
            workers += [
                StreamWorker(g, session, worker_settings, queue, metrics, cursors, stop,
                             rehydrator, gate)
                for g in groups
            ]  # fmt: skip
            coordinator = None
            if settings.coordination == "postgres":

                def coordinator(sup: Supervisor) -> Coordinator:
                    return Coordinator(
                        dsn, [g.key for g in groups], sup.start_worker, sup.stop_worker,
                        metrics, check_s=settings.lease_check_s, stop_event=stop,
                    )  # fmt: skip

            supervisor = Supervisor(
                writer,
                workers,
                metrics,
                stop,
                shutdown_timeout_s=settings.shutdown_timeout_s,
                restart_max_s=settings.worker_restart_max_s,
                coordinator=coordinator,
                extra=(
                    {"partitions": lambda: _partitions_loop(settings, stop, partitioned)}
                    if settings.manage_partitions
                    else {}
                ),
            )
            with _tuned_gc():
                code = await supervisor.run()
    finally:
        # Drain order: the supervisor stopped reading and flushed; now the pool, then the port.
        try:
            await asyncio.wait_for(pool.close(), timeout=5)
        except TimeoutError:
            pool.terminate()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("daemon_stopped", exit_code=code)
    return code
