"""Start-up checks against PostgreSQL: reachable within a bound, schema at head, groups known."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

from ingestor.config import DatabaseSettings
from ingestor.domain.cursors import Cursor
from ingestor.domain.groups import Group
from ingestor.errors import DatabaseUnavailable, PermissionProblem, SchemaError
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded, describe
from ingestor.storage.schema import SCHEMA_HEAD

log = structlog.get_logger("ingestor.db")


# Refusals that waiting does not cure: the database or role does not exist, the password is
# wrong, the server refuses this client. Start-up fails at once on these, with the cause.
PERMANENT = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


async def connect_with_wait(dsn: str, wait_s: float) -> asyncpg.Connection:
    """Connect, retrying until ``wait_s`` has passed (compose starts us beside Postgres)."""
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.connect(dsn, timeout=min(10.0, max(wait_s, 1.0)))
        except PERMANENT as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL refused the connection: {describe(exc)}"
            ) from None
        except asyncpg.ClientConfigurationError as exc:  # the URL itself is wrong
            raise DatabaseUnavailable(f"database URL: {describe(exc)}") from None
        except CONNECTION_FAILURES as exc:
            # A standby not yet promoted (target_session_attrs=read-write) is waited for too.
            if time.monotonic() >= deadline:
                raise DatabaseUnavailable(
                    f"PostgreSQL not reachable after {wait_s:.0f} s ({attempt} attempts): "
                    f"{describe(exc)}"
                ) from None
            log.info("database_wait", attempt=attempt, error=describe(exc))
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


class Pinger:
    """Readiness's own connection: never queued behind gap recovery or the writer."""

    def __init__(self, dsn: str, timeout_s: float = 2.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one probe at a time on the one connection

    async def ping(self) -> str | None:
        """None when PostgreSQL answers within the bound, else why not."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if self._conn is None or self._conn.is_closed():
                        self._conn = await asyncpg.connect(
                            self._dsn, server_settings={"application_name": "ingestor-ready"}
                        )
                    await self._conn.fetchval(sql.PING)
            except CONNECTION_FAILURES as exc:
                await self.close()
                return f"database unreachable ({type(exc).__name__})"
        return None

    async def close(self) -> None:
        """Close the connection, if any (bounded)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_bounded(conn)


async def check_schema(conn: asyncpg.Connection, head: str) -> None:
    """Refuse to run on a missing or older schema; never migrate silently."""
    try:
        current = await conn.fetchval(sql.SCHEMA_REVISION)
    except asyncpg.UndefinedTableError:
        current = None
    if current != head:
        found = "no schema" if current is None else f"schema revision {current}"
        raise SchemaError(f"database has {found}, this build needs {head}: run `ingestor migrate`")


@dataclass(frozen=True)
class Registered:
    """The groups as the database has them: committed cursors and numbers."""

    cursors: dict[str, Cursor]
    group_numbers: dict[str, int]


async def register_groups(conn: asyncpg.Connection, groups: list[Group]) -> Registered:
    """Upsert one cursor row per group; the committed cursors to resume from, and the
    groups' numbers (history's change_events carry them)."""
    cursors: dict[str, Cursor] = {}
    numbers: dict[str, int] = {}
    for g in groups:
        row = await conn.fetchrow(
            sql.REGISTER_GROUP, g.key, g.stream.kind, g.stream.sport, list(g.leagues)
        )
        numbers[g.key] = row["group_no"]
        if row["last_entry_id"]:
            cursors[g.key] = Cursor(row["last_entry_id"], row["last_event_id"])
    return Registered(cursors, numbers)


async def start_up(settings: DatabaseSettings, groups: list[Group]) -> Registered:
    """The database answers, its schema is this build's, the role may write, the groups are
    registered; returns their committed cursors and their numbers. Never migrates unless
    ``migrate_on_start``."""
    dsn = settings.database_url.get_secret_value()
    conn = await connect_with_wait(dsn, settings.database_wait_s)
    try:
        if settings.migrate_on_start:
            from ingestor.storage.migrations import upgrade  # alembic only when asked

            applied = await asyncio.to_thread(upgrade, dsn)
            log.info("schema_migrated", applied=applied, revision=SCHEMA_HEAD)
        await check_schema(conn, SCHEMA_HEAD)
        await check_privileges(conn)
        return await register_groups(conn, groups)
    finally:
        await conn.close()


# Every table the daemon reads and writes (the writer, gap recovery, start-up).
TABLES = (
    "odds",
    "odds_changes",
    "change_events",
    "history_marks",
    "settlements",
    "fixtures",
    "fixture_status_history",
    "stream_cursors",
    "dead_letters",
    "stream_gaps",
    "stream_gap_odds",
)
# ... and deletes from: a row made from REST that the stream's row of the same change
# replaces (with its event), and the repair's finished work.
DELETES_FROM = ("odds_changes", "change_events", "stream_gap_odds")


async def check_privileges(conn: asyncpg.Connection) -> None:
    """Name every missing grant, as the GRANT that fixes it, before the first flush fails."""
    rows = await conn.fetch(sql.MISSING_PRIVILEGES, list(TABLES), list(DELETES_FROM))
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


async def create_database(dsn: str, wait_s: float) -> bool:
    """Create the URL's database when it does not exist (through the server's ``postgres``
    database, as ``createdb`` does); True when it was created. For ``ingestor demo``."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        pass  # missing: create it below
    except (*PERMANENT, *CONNECTION_FAILURES):
        # Anything else: wait for the server as every command does (or say why in one line).
        await close_bounded(await connect_with_wait(dsn, wait_s))
        return False
    else:
        await close_bounded(conn)
        return False
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        raise DatabaseUnavailable("database URL: it names no database to create")
    try:
        conn = await asyncpg.connect(dsn, database="postgres", timeout=10)
    except (*PERMANENT, *CONNECTION_FAILURES) as exc:
        raise DatabaseUnavailable(
            f"cannot reach the server's postgres database to create {name}: {describe(exc)}"
        ) from None
    try:
        await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
    except asyncpg.DuplicateDatabaseError:
        return False  # another demo made it meanwhile
    except asyncpg.InsufficientPrivilegeError as exc:
        raise PermissionProblem(f"cannot create database {name}: {describe(exc)}") from None
    finally:
        await close_bounded(conn)
    return True
