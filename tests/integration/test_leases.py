"""The Leases port on PostgreSQL: exclusive claims, counted members, a lost session said."""

from __future__ import annotations

from typing import Any

from ingestor.ports import LeaseError
from ingestor.storage.leases import PgLeases
from tests.conftest import wait_until


async def test_claims_are_exclusive_counted_and_released_with_the_session(
    database_url: str, pg: Any
) -> None:
    a, b = PgLeases(database_url), PgLeases(database_url)
    try:
        assert await a.try_take("g1") and not await b.try_take("g1")
        assert await b.try_take("g2")
        assert await a.members() == 2
        await a.close()  # the session ends: its claims go with it
        assert await b.try_take("g1")
        assert await b.members() == 1
    finally:
        await a.close()
        await b.close()


async def test_a_lost_session_is_an_error_not_a_quiet_reconnect(database_url: str, pg: Any) -> None:
    a = PgLeases(database_url)
    try:
        assert await a.try_take("g1")
        await pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'ingestor-leases' AND datname = current_database()"
        )

        async def lost() -> bool:
            try:  # the client learns of the dead socket on a use after the server closed it
                await a.members()
            except LeaseError:
                return True
            return False

        await wait_until(lost, timeout_s=10)
        await a.reset()
        assert await a.try_take("g1")  # a new session claims again, knowingly
    finally:
        await a.close()
