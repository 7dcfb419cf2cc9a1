"""Start-up checks against PostgreSQL: reachable within a bound, schema at head, groups known."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import structlog

from ingestor.domain.cursors import Cursor, Cursors
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


async def register_groups(conn: Any, groups: list[Group]) -> Cursors:
    """Upsert one cursor row per group; return the committed cursors to resume from."""
    cursors = Cursors()
    for g in groups:
        row = await conn.fetchrow(
            sql.REGISTER_GROUP, g.key, g.stream.kind, g.stream.sport, list(g.leagues)
        )
        if row["last_entry_id"]:
            cursors.adopt(g.key, Cursor(row["last_entry_id"], row["last_event_id"]))
    return cursors


# Every table the daemon reads and writes (the writer, gap recovery, start-up).
TABLES = ("odds", "odds_history", "fixtures", "fixture_status_history", "stream_cursors",
          "dead_letters")  # fmt: skip


class PermissionProblem(SchemaError):
    """The daemon's database role lacks a privilege it needs."""


async def check_privileges(conn: Any) -> None:
    """Name every missing grant, as the GRANT that fixes it, before the first flush fails."""
    rows = await conn.fetch(sql.MISSING_PRIVILEGES, list(TABLES))
    role = await conn.fetchval(sql.CURRENT_ROLE)
    by_object: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        by_object.setdefault((r["kind"], r["obj"]), []).append(r["priv"])
    grants = [
        f"GRANT {', '.join(privs)} ON {'SEQUENCE ' if kind == 'SEQUENCE' else ''}{obj} TO {role}"
        for (kind, obj), privs in by_object.items()
    ]
    if not await conn.fetchval(sql.TEMP_PRIVILEGE):
        # The writer stages batches in temporary tables.
        grants.append(f"GRANT TEMPORARY ON DATABASE {await conn.fetchval(sql.DATABASE)} TO {role}")
    if grants:
        raise PermissionProblem(
            f"database role {role} lacks privileges the daemon needs: {'; '.join(grants)} "
            "(run them as the tables' owner; deploy/postgres/init-roles.sh grants them all)"
        )
