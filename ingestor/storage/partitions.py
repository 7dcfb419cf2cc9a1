"""Day partitions of the history tables: created ahead, dropped past the retention."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog

from ingestor.config import PartitionSettings
from ingestor.lifecycle import sleep_or_stop
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, run_once
from ingestor.storage.write.history import day_event_range

log = structlog.get_logger("ingestor.partitions")

_DAY = re.compile(r"_p(\d{8})$")


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _time_bound(day: date) -> str:
    return f"'{_midnight(day).isoformat()}'"


def _event_bound(day: date) -> str:
    return str(day_event_range(_midnight(day))[0])


@dataclass(frozen=True)
class Partitioned:
    """A table split by day: its key column, a day's lower bound as SQL, how many days past
    the retention its days are kept, and the rows retention never drops (a query over
    ``{source}``) with a column that tells them apart."""

    table: str
    key: str
    bound: Callable[[date], str]
    keep_extra_days: int = 0
    keep: str | None = None
    unique: str = ""


PARTITIONED = (
    Partitioned("odds_changes", "source_ts", _time_bound, keep=sql.EXPLAINING_ROWS, unique="ev"),
    # By day of receipt (the id's high bits): a change received late points at an event of
    # a later day, so events outlive the retention by two days.
    Partitioned(
        "change_events",
        "id",
        _event_bound,
        keep_extra_days=2,
        keep=sql.EXPLAINING_EVENTS,
        unique="id",
    ),
    Partitioned("fixture_status_history", "source_ts", _time_bound),
)
# How long one step of the upkeep waits for a table the writer is using, then gives up.
LOCK_TIMEOUT_S = 2.0


def partition_name(table: str, day: date) -> str:
    """``odds_changes_p20261125``."""
    return f"{table}_p{day:%Y%m%d}"


async def _create(conn: asyncpg.Connection, p: Partitioned, day: date) -> None:
    """Create one day; rows of that day already in the default partition move into it
    (PostgreSQL refuses the new partition while the default holds rows of its range)."""
    name, lo, hi = partition_name(p.table, day), p.bound(day), p.bound(day + timedelta(days=1))
    await conn.execute(sql.MOVE_OUT_OF_DEFAULT.format(table=p.table, key=p.key, lo=lo, hi=hi))
    await conn.execute(sql.CREATE_PARTITION.format(name=name, table=p.table, lo=lo, hi=hi))
    await conn.execute(sql.MOVE_BACK.format(table=p.table))


async def maintain(
    conn: asyncpg.Connection,
    *,
    today: date,
    ahead_days: int,
    retention_days: int,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> dict[str, list[str]]:
    """Create today..today+ahead, drop days older than the retention; one process at a time.

    Raises ``asyncpg.LockNotAvailableError`` when a table stayed busy; steps done stay done."""
    created: list[str] = []
    dropped: list[str] = []
    async with _step(conn, lock_timeout_s):
        # Session-level, so it outlives this transaction: another process waits (or gives up
        # at the lock timeout) while this one works, instead of doing the same DDL at once.
        await conn.execute(sql.PARTITIONS_LOCK)
    try:
        for p in PARTITIONED:
            cutoff = today - timedelta(days=retention_days + p.keep_extra_days)
            existing = {r["name"] for r in await conn.fetch(sql.LIST_PARTITIONS, p.table)}
            for offset in range(ahead_days + 1):
                name = partition_name(p.table, today + timedelta(days=offset))
                if name not in existing:
                    async with _step(conn, lock_timeout_s):
                        await _create(conn, p, today + timedelta(days=offset))
                    created.append(name)
            for name in sorted(existing):
                match = _DAY.search(name)
                if match and datetime.strptime(match[1], "%Y%m%d").date() < cutoff:
                    async with _step(conn, lock_timeout_s):
                        await _drop(conn, p, name)
                    dropped.append(name)
            async with _step(conn, lock_timeout_s):
                await conn.execute(_expire(p, p.bound(cutoff)))
    finally:
        # The lock dies with the session anyway; a failed unlock must not hide why we stopped.
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute(sql.PARTITIONS_UNLOCK)
    return {"created": created, "dropped": dropped}


async def _drop(conn: asyncpg.Connection, p: Partitioned, name: str) -> None:
    """Drop one day; the rows retention keeps move to the default partition."""
    if p.keep is None:
        await conn.execute(sql.DROP_PARTITION.format(name=name))
        return
    keep = p.keep.format(source=name)
    await conn.execute(sql.DROP_KEEPING.format(keep=keep, name=name, table=p.table))


def _expire(p: Partitioned, cutoff: str) -> str:
    """The default partition's rows past the retention, but those it keeps."""
    if p.keep is None:
        return sql.EXPIRE_DEFAULT.format(table=p.table, key=p.key, cutoff=cutoff)
    keep = p.keep.format(source=f"{p.table}_default")
    return sql.EXPIRE_DEFAULT_KEEPING.format(
        table=p.table, key=p.key, cutoff=cutoff, keep=keep, unique=p.unique
    )


@contextlib.asynccontextmanager
async def _step(conn: asyncpg.Connection, lock_timeout_s: float) -> AsyncIterator[None]:
    """One short transaction per partition, which gives up when its table stays busy.

    Why: the writer's current-state connection holds its tables while it waits, in Python,
    for its history connection. Upkeep holding odds_changes' ACCESS EXCLUSIVE lock while
    waiting for fixture_status_history (one transaction over both) closed a wait cycle that
    PostgreSQL cannot detect, and the flush hung until flush_timeout_s. Short transactions
    hold one table at a time, and lock_timeout bounds how long a flush can queue behind one.
    """
    async with conn.transaction():
        await conn.execute(sql.SET_LOCAL_LOCK_TIMEOUT, f"{max(1, int(lock_timeout_s * 1000))}ms")
        yield


# After a failed round, the next comes this soon (a busy table frees up in seconds).
RETRY_S = 60.0
# A database that stops answering must not hold a round (and start-up) for ever.
ROUND_TIMEOUT_S = 300.0


def partitions_command(url: str, settings: PartitionSettings) -> str:
    """``ingestor partitions``: one round, what it did in one line (``StartupError`` when the
    database fails it)."""
    done = run_once(
        maintain_once(
            url,
            ahead_days=settings.partitions_ahead_days,
            retention_days=settings.history_retention_days,
        ),
        "partitions",
    )
    return f"created {len(done['created'])}, dropped {len(done['dropped'])}"


async def maintain_once(url: str, *, ahead_days: int, retention_days: int) -> dict[str, list[str]]:
    """One round of upkeep on a connection of its own (the tables' owner's, for the DDL)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await maintain(
            conn,
            today=datetime.now(UTC).date(),
            ahead_days=ahead_days,
            retention_days=retention_days,
        )
    finally:
        await conn.close(timeout=5)


class Upkeep:
    """The daemon's partition upkeep: a first round before streaming, then every check_s."""

    def __init__(self, url: str, settings: PartitionSettings) -> None:
        self._url = url
        self._ahead_days = settings.partitions_ahead_days
        self._retention_days = settings.history_retention_days
        self._check_s = settings.partition_check_s
        self._done = False

    async def round(self) -> bool:
        """One logged round; False when it failed. Never fatal: without it, rows land in the
        default partition and nothing is lost."""
        try:
            async with asyncio.timeout(ROUND_TIMEOUT_S):
                done = await maintain_once(
                    self._url, ahead_days=self._ahead_days, retention_days=self._retention_days
                )
            log.info("partitions_maintained", **done)
        except CONNECTION_FAILURES as exc:
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
            self._done = False
            return False
        self._done = True
        return True

    async def loop(self, stop: asyncio.Event) -> None:
        """Keep the days ahead and within the retention until stopped."""
        while True:
            wait = self._check_s if self._done else min(self._check_s, RETRY_S)
            if await sleep_or_stop(stop, wait):
                return
            await self.round()
