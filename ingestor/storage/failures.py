"""What a lost or refused database connection raises, whichever layer of asyncpg notices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol, TypeVar

import asyncpg

from ingestor.errors import DatabaseUnavailable, SchemaError

T = TypeVar("T")

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


def describe(exc: BaseException) -> str:
    """One line for a connection failure, without the URL (it may hold a password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_once(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run one database coroutine to its end (a command of the CLI); a refused, missing or
    unmigrated database becomes one ``StartupError`` line naming ``what`` failed."""
    try:
        return asyncio.run(coro)
    except asyncpg.UndefinedTableError as exc:
        raise SchemaError(f"{what}: {describe(exc)}: run `ingestor migrate` first") from None
    except CONNECTION_FAILURES as exc:
        raise DatabaseUnavailable(f"{what}: cannot use the database: {describe(exc)}") from None
