"""Group leases as PostgreSQL session advisory locks, all held on one dedicated connection.

Why advisory locks rather than a lease table: PostgreSQL releases a session's locks the moment
the session ends (process killed, connection lost), so there is no expiry to tune and no clock
to trust, and a lock can never be held by two sessions at once. Each process also holds one
"member" lock, so that everyone can count the members in ``pg_locks``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from ingestor.domain.cursors import Cursor
from ingestor.ports import Claim, LeaseError
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, close_bounded

MEMBER_NS = 0x1C0D  # advisory lock "class" of member locks (two-int form)
# How long a claim waits for the previous owner's flush in progress (it holds the cursor row
# while it commits); longer, and the group is taken on a later round.
CLAIM_WAIT_S = 5.0


def group_lock_key(group_key: str) -> int:
    """A stable signed 64-bit lock key per group (collisions: about 1 in 2^64)."""
    digest = hashlib.blake2b(f"ingestor-group:{group_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PgLeases:
    """The ``Leases`` port on one asyncpg connection of its own."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._member_id = random.randrange(1, 2**31)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None and self._conn.is_closed():
            # The claims died with that session: never reconnect quietly as if they had not.
            self._conn = None
            raise LeaseError("the lease session was lost")
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    command_timeout=10,
                    server_settings={"application_name": "ingestor-leases"},
                )
                await self._conn.fetchval(sql.TRY_LOCK_PAIR, MEMBER_NS, self._member_id)
            yield self._conn
        except CONNECTION_FAILURES as exc:
            raise LeaseError(f"{type(exc).__name__}: {exc}") from exc

    async def members(self) -> int:
        """Member locks granted in this database."""
        async with self._session() as conn:
            return max(1, int(await conn.fetchval(sql.COUNT_MEMBERS, MEMBER_NS)))

    async def try_take(self, group_key: str) -> bool:
        """``pg_try_advisory_lock`` on the group's key."""
        async with self._session() as conn:
            return bool(await conn.fetchval(sql.TRY_GROUP, group_lock_key(group_key)))

    async def release(self, group_key: str) -> None:
        """``pg_advisory_unlock`` on the group's key."""
        async with self._session() as conn:
            await conn.fetchval(sql.RELEASE_GROUP, group_lock_key(group_key))

    async def claim(self, group_key: str) -> Claim | None:
        """The group's epoch moves on once every flush that read the old one has ended (its
        row lock waits for theirs, at most ``CLAIM_WAIT_S``: None then), and its cursor."""
        async with self._session() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(sql.SET_LOCAL_LOCK_TIMEOUT, f"{int(CLAIM_WAIT_S * 1000)}ms")
                    row = await conn.fetchrow(sql.CLAIM_GROUP, group_key)
            except asyncpg.LockNotAvailableError:
                return None
        if row is None:  # not registered: nothing committed it, nothing to fence
            return Claim(0, None)
        return Claim(row["epoch"], Cursor(row[1], row[2]) if row[1] else None)

    async def reset(self) -> None:
        """Drop the session: every lock it held is released by PostgreSQL."""
        await self.close()

    async def close(self) -> None:
        """Close the session (bounded; a dead server gets the socket closed instead)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_bounded(conn)
