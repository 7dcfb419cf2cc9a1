"""The ``OddsReader`` port: what gap recovery reads, on a small pool of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from ingestor.ports import HeldOdd, StoreError
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded, describe


class PgOddsReader:
    """Reads `odds` for gap recovery; the pool opens on first use (none if never used)."""

    def __init__(self, dsn: str, max_connections: int = 2) -> None:
        self._dsn = dsn
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def _pool_or_fail(self) -> AsyncIterator[asyncpg.Pool]:
        """The pool (opened on first use); a database failure is a ``StoreError``."""
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=self._max)
            yield self._pool
        except CONNECTION_FAILURES as exc:
            raise StoreError(f"reading the odds failed: {describe(exc)}") from exc

    async def odds_of_fixtures(
        self,
        fixture_ids: Sequence[str],
        stream: str,
        sportsbooks: Sequence[str] | None,
        markets: Sequence[str] | None,
    ) -> dict[str, HeldOdd]:
        """The stored odds of these fixtures within the stream's filters, by odd id."""
        async with self._pool_or_fail() as pool:
            rows = await pool.fetch(
                sql.ODDS_OF_FIXTURES,
                list(fixture_ids),
                stream,
                list(sportsbooks) if sportsbooks else None,
                list(markets) if markets else None,
            )
        return {r["id"]: HeldOdd(r["status"], r["source_ts"], r["order_key"]) for r in rows}

    async def known_fixtures(
        self, stream: str, leagues: Sequence[str], window_h: float
    ) -> list[str]:
        """Fixtures the database has seen lately (when the REST listing fails)."""
        async with self._pool_or_fail() as pool:
            rows = await pool.fetch(sql.KNOWN_FIXTURES, stream, list(leagues), window_h)
        return sorted(r["fixture_id"] for r in rows)

    async def close(self) -> None:
        """Close the pool, if it was opened."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_bounded(pool, timeout_s=5)
