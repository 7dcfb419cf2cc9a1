"""Day partitions of the history tables: created ahead, dropped past the retention."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ingestor.storage import sql

PARTITIONED = ("odds_history", "fixture_status_history")
_DAY = re.compile(r"_p(\d{8})$")


def partition_name(table: str, day: date) -> str:
    """``odds_history_p20261125``."""
    return f"{table}_p{day:%Y%m%d}"


def _bound(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


async def _create(conn: Any, table: str, day: date) -> None:
    """Create one day; rows of that day already in the default partition move into it
    (PostgreSQL refuses the new partition while the default holds rows of its range)."""
    name, lo, hi = partition_name(table, day), _bound(day), _bound(day + timedelta(days=1))
    await conn.execute(sql.MOVE_OUT_OF_DEFAULT.format(table=table, lo=lo, hi=hi))
    await conn.execute(sql.CREATE_PARTITION.format(name=name, table=table, lo=lo, hi=hi))
    await conn.execute(sql.MOVE_BACK.format(table=table))


async def maintain(
    conn: Any, *, today: date, ahead_days: int, retention_days: int
) -> dict[str, list[str]]:
    """Create today..today+ahead, drop days older than the retention; one process at a time."""
    created: list[str] = []
    dropped: list[str] = []
    cutoff = today - timedelta(days=retention_days)
    async with conn.transaction():
        await conn.execute(sql.PARTITIONS_LOCK)
        for table in PARTITIONED:
            existing = {r["name"] for r in await conn.fetch(sql.LIST_PARTITIONS, table)}
            for offset in range(ahead_days + 1):
                day = today + timedelta(days=offset)
                if partition_name(table, day) not in existing:
                    await _create(conn, table, day)
                    created.append(partition_name(table, day))
            for name in sorted(existing):
                match = _DAY.search(name)
                if match and datetime.strptime(match[1], "%Y%m%d").date() < cutoff:
                    await conn.execute(sql.DROP_PARTITION.format(name=name))
                    dropped.append(name)
            await conn.execute(
                sql.EXPIRE_DEFAULT.format(table=table), datetime.fromisoformat(_bound(cutoff))
            )
    return {"created": created, "dropped": dropped}
