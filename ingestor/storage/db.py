"""Start-up checks against PostgreSQL: reachable within a bound, schema at head, groups known."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import structlog

from ingestor.domain.groups import Group
from ingestor.storage import sql
from ingestor.storage.migrations import SchemaError

log = structlog.get_logger("ingestor.db")


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer within the start-up bound."""


async def connect_with_wait(dsn: str, wait_s: float) -> Any:
    """Connect, retrying until ``wait_s`` has passed (compose starts us beside Postgres)."""
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.connect(dsn, timeout=min(10.0, max(wait_s, 1.0)))
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() >= deadline:
                raise DatabaseUnavailable(
                    f"PostgreSQL not reachable after {wait_s:.0f} s ({attempt} attempts): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            log.info("database_wait", attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


async def check_schema(conn: Any, head: str) -> None:
    """Refuse to run on a missing or older schema; never migrate silently."""
    try:
        current = await conn.fetchval(sql.SCHEMA_REVISION)
    except asyncpg.UndefinedTableError:
        current = None
    if current != head:
        found = "no schema" if current is None else f"schema revision {current}"
        raise SchemaError(f"database has {found}, this build needs {head}: run `ingestor migrate`")


async def register_groups(conn: Any, groups: list[Group]) -> dict[str, str]:
    """Upsert one cursor row per group; return the committed cursors to resume from."""
    cursors: dict[str, str] = {}
    for g in groups:
        row = await conn.fetchrow(
            sql.REGISTER_GROUP, g.key, g.stream.kind, g.stream.sport, list(g.leagues)
        )
        if row["last_entry_id"]:
            cursors[g.key] = row["last_entry_id"]
    return cursors


TABLES = ("odds", "odds_history", "fixtures", "fixture_status_history", "stream_cursors",
          "dead_letters")  # fmt: skip


class PermissionProblem(SchemaError):
    """The daemon's database role cannot write one of its tables."""


async def check_privileges(conn: Any) -> None:
    """Say which table the role cannot write, before the first flush fails on it."""
    missing = []
    for table in TABLES:
        rights = await conn.fetchval(sql.TABLE_PRIVILEGES, table)
        if not rights:
            missing.append(f"SELECT, INSERT and UPDATE on {table}")
    if not await conn.fetchval(sql.TEMP_PRIVILEGE):
        missing.append("TEMP on the database (the writer stages batches in temp tables)")
    if missing:
        role = await conn.fetchval("SELECT current_user")
        raise PermissionProblem(
            f"database role {role} lacks: {'; '.join(missing)} "
            "(grant them, or run ingestor migrate as the owner)"
        )
