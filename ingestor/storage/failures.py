"""What a lost or refused database connection raises, whichever layer of asyncpg notices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

import asyncpg

# InternalClientError: asyncpg's protocol found itself mid-operation on a connection the
# server had just ended (seen when a backend is terminated between two statements).
CONNECTION_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class Closable(Protocol):
    """An asyncpg connection or pool."""

    def close(self) -> Awaitable[None]: ...

    def terminate(self) -> None: ...


async def close_bounded(resource: Closable, timeout_s: float = 2.0) -> None:
    """Close politely, within ``timeout_s``; a dead server (or a cancellation) gets the
    sockets closed instead, so that shutdown never waits on a database that stopped answering."""
    try:
        await asyncio.wait_for(resource.close(), timeout=timeout_s)
    except CONNECTION_FAILURES:
        resource.terminate()
    except asyncio.CancelledError:
        resource.terminate()
        raise
