"""Group ownership across processes through PostgreSQL session advisory locks.

Why advisory locks rather than a lease table: PostgreSQL releases a session's locks the moment
the session ends (process killed, connection lost), so there is no expiry to tune and no clock
to trust, and a lock can never be held by two sessions at once. Each process holds one
"member" lock (so everyone can count the members in ``pg_locks``) and one lock per group it
streams, all on one dedicated connection. Every ``lease_check_s`` a process takes free groups
up to its fair share (groups / members, rounded up) and gives back what is over it: a worker
is stopped before its lock is released, and started only after its lock is taken, so no group
is ever streamed by two processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from ingestor.domain.cursors import Cursor
from ingestor.metrics import Metrics
from ingestor.stream.worker import sleep_or_stop

log = structlog.get_logger("ingestor.coordination")

MEMBER_NS = 0x1C0D  # advisory lock "class" of member locks (two-int form)

TRY_GROUP = "SELECT pg_try_advisory_lock($1::bigint)"
RELEASE_GROUP = "SELECT pg_advisory_unlock($1::bigint)"
TAKE_MEMBER = "SELECT pg_try_advisory_lock($1::int, $2::int)"
COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::int AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
READ_CURSOR = "SELECT last_entry_id, last_event_id FROM stream_cursors WHERE group_key = $1"


def group_lock_key(group_key: str) -> int:
    """A stable signed 64-bit lock key per group (collisions: about 1 in 2^64)."""
    digest = hashlib.blake2b(f"ingestor-group:{group_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


Start = Callable[[str, Cursor | None], Awaitable[None]]
Stop = Callable[[str], Awaitable[None]]


class Coordinator:
    """Keeps this process's share of the groups, starting and stopping their workers."""

    def __init__(
        self,
        dsn: str,
        group_keys: list[str],
        start: Start,
        stop: Stop,
        metrics: Metrics,
        *,
        check_s: float,
        stop_event: asyncio.Event,
    ) -> None:
        self._dsn = dsn
        self._groups = group_keys
        self._start = start
        self._stop = stop
        self._metrics = metrics
        self._check_s = check_s
        self._stop_event = stop_event
        self._conn: Any = None
        self.owned: set[str] = set()
        self._member_id = random.randrange(1, 2**31)
        self._first_round = True

    async def run(self) -> None:
        """Until stopped; on a lost lock connection every worker stops at once."""
        try:
            while not self._stop_event.is_set():
                try:
                    await self._round()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    log.warning("leases_lost", owned=len(self.owned))
                    await self._drop_all()
                await sleep_or_stop(self._stop_event, self._check_s)
        finally:
            await self._drop_all()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, timeout=10, command_timeout=10,
                server_settings={"application_name": "ingestor-leases"},
            )  # fmt: skip
            await self._conn.fetchval(TAKE_MEMBER, MEMBER_NS, self._member_id)
        return self._conn

    async def _round(self) -> None:
        conn = await self._connection()
        members = max(1, int(await conn.fetchval(COUNT_MEMBERS, MEMBER_NS)))
        share = math.ceil(len(self._groups) / members)
        for key in sorted(self.owned)[share:]:  # over the share: give back, worker first
            await self._stop(key)
            await conn.fetchval(RELEASE_GROUP, group_lock_key(key))
            self.owned.discard(key)
            log.info("group_released", group=key, members=members, share=share)
        # Start from a different place in the list per process, so joiners spread out.
        offset = self._member_id % max(1, len(self._groups))
        ordered = self._groups[offset:] + self._groups[:offset]
        for key in ordered:
            if len(self.owned) >= share:
                break
            if key in self.owned or not await conn.fetchval(TRY_GROUP, group_lock_key(key)):
                continue
            self.owned.add(key)
            row = await conn.fetchrow(READ_CURSOR, key)  # another process may have moved it
            cursor = Cursor(row[0], row[1]) if row and row[0] else None
            if not self._first_round:
                self._metrics.group_takeovers.inc()
            log.info("group_acquired", group=key, members=members, share=share,
                     cursor=cursor.entry_id if cursor else None)  # fmt: skip
            await self._start(key, cursor)
        self._first_round = False
        self._metrics.groups_owned.set(len(self.owned))

    async def _drop_all(self) -> None:
        for key in sorted(self.owned):
            await self._stop(key)
        self.owned.clear()
        self._metrics.groups_owned.set(0)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Closing the session releases every lock it held, after the workers stopped.
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()
