"""The ``GapLedger`` port: the gap ledger and the repair's work queue, on a small pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ingestor.ports import LedgerError, RepairWork
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded
from ingestor.storage.write.history import odd_key


class PgGapLedger:
    """Reads and writes ``stream_gaps`` and ``stream_gap_odds``; the pool opens on first use.
    Every database failure is a ``LedgerError`` (the callers retry)."""

    def __init__(self, dsn: str, max_connections: int = 2) -> None:
        self._dsn = dsn
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=self._max, command_timeout=30
                )
            async with self._pool.acquire() as conn:
                yield conn
        except CONNECTION_FAILURES as exc:
            raise LedgerError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc

    async def open(
        self,
        group_key: str,
        cause: str,
        from_ts: datetime,
        until_ts: datetime,
        *,
        unrepairable: str | None = None,
        opened_by: UUID | None = None,
    ) -> int:
        """Record a gap; ``unrepairable``: why no repair is possible (closed at once);
        ``opened_by``: the connection whose gap it is (the writer may have recorded it)."""
        async with self._conn() as conn:
            gap_id = int(
                await conn.fetchval(
                    sql.OPEN_GAP, group_key, cause, from_ts, until_ts, None, opened_by
                )
            )
            if unrepairable is not None:
                await _close(conn, [gap_id], "unrepairable", unrepairable)
        return gap_id

    async def scope(
        self,
        group_key: str,
        changed: Mapping[str, datetime | None],
        taken_at: datetime,
        epoch: int,
    ) -> int:
        """The group's gaps that ended before the snapshot get the odds that may have changed
        during them (none unless the group is still at ``epoch``)."""
        ids = list(changed)
        times = [changed[i] for i in ids]
        async with self._conn() as conn:
            rows = await conn.fetch(sql.SCOPE_GAPS, group_key, ids, times, taken_at, epoch)
        return sum(r["queued"] for r in rows)

    async def close(self, gap_ids: Sequence[int], state: str, detail: str) -> None:
        """Close gaps without repair."""
        async with self._conn() as conn:
            await _close(conn, gap_ids, state, detail)

    async def work(self, group_keys: Sequence[str], limit: int) -> list[RepairWork]:
        """The repair's next odds, oldest gaps first."""
        async with self._conn() as conn:
            rows = await conn.fetch(sql.REPAIR_WORK, list(group_keys), limit)
        return [RepairWork(r[0], r[1], r[2], tuple(r[3])) for r in rows]

    async def held(self, odd_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The stored ``odds`` rows of these odds, by id."""
        async with self._conn() as conn:
            rows = await conn.fetch(sql.HELD_ODDS, list(odd_ids))
        return {r["id"]: dict(r) for r in rows}

    async def repaired_rows(self, odd_ids: Sequence[str]) -> int:
        """How many history rows made by repair these odds have."""
        async with self._conn() as conn:
            n = await conn.fetchval(sql.REPAIRED_ROWS, [odd_key(i) for i in odd_ids])
        return int(n)

    async def repaired(
        self, work: Sequence[RepairWork], added: int, group_key: str, epoch: int
    ) -> bool:
        """A call's work is stored: its odds leave the queue, its gaps count it (and close
        when nothing is left). Only while the group is still at ``epoch``."""
        pairs = sorted((g, w.odd_id) for w in work for g in w.gaps)
        first = pairs[0][0]  # the call and what it added are counted on the oldest gap
        async with self._conn() as conn, conn.transaction():
            if not await conn.fetchval(sql.STILL_OWNED, group_key, epoch):
                return False
            gaps = [g for g, _ in pairs]
            await conn.execute(sql.LOCK_GAPS, sorted(set(gaps)))
            await conn.execute(sql.REPAIRED, gaps, [o for _, o in pairs], first, added)
            await conn.execute(sql.PRUNE_DONE, sorted(set(gaps)))
        return True

    async def summary(self) -> dict[str, tuple[int, datetime | None]]:
        """Gaps not repaired, by state: how many, and when the oldest was opened."""
        async with self._conn() as conn:
            rows = await conn.fetch(sql.GAP_SUMMARY)
        return {r["state"]: (r["n"], r["oldest"]) for r in rows}

    async def close_pool(self) -> None:
        """Close the pool, if it was opened."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_bounded(pool, timeout_s=5)


async def _close(conn: asyncpg.Connection, gap_ids: Sequence[int], state: str, detail: str) -> None:
    async with conn.transaction():
        await conn.execute(sql.LOCK_GAPS, sorted(gap_ids))
        await conn.execute(sql.CLOSE_GAPS, list(gap_ids), state, detail)
