"""What a lost or refused database connection raises, whichever layer of asyncpg notices."""

from __future__ import annotations

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
