"""The fault-injecting TCP proxy: pass-through, cut/restore, and added latency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from loopback.tcpproxy import TcpProxy
from tests.conftest import wait_until

DELAY_S = 0.05
WAIT_S = 5.0


@pytest.fixture
def pg_target(admin_url: str) -> tuple[str, int]:
    """Host and port of the test PostgreSQL (127.0.0.1:5432 by default)."""
    parts = urlsplit(admin_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@pytest.fixture
async def pg_proxy(pg_target: tuple[str, int]) -> AsyncIterator[TcpProxy]:
    """A started proxy in front of PostgreSQL."""
    proxy = TcpProxy(*pg_target)
    await proxy.start()
    yield proxy
    await proxy.close()


async def connect(port: int) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", database="postgres", timeout=2
    )


async def test_queries_pass_through(pg_proxy: TcpProxy) -> None:
    conn = await connect(pg_proxy.port)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT $1::text", "x" * 200_000) == "x" * 200_000
        assert pg_proxy.connections_total == 1
        assert pg_proxy.open_connections == 1
    finally:
        await conn.close()
    await wait_until(lambda: pg_proxy.open_connections == 0, timeout_s=WAIT_S)


async def test_cut_drops_connections_and_refuses_until_restore(pg_proxy: TcpProxy) -> None:
    port = pg_proxy.port
    conn = await connect(port)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await pg_proxy.cut()
        assert pg_proxy.open_connections == 0
        with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresError, OSError)):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), WAIT_S)
    finally:
        conn.terminate()

    with pytest.raises(ConnectionRefusedError):
        await connect(port)

    await pg_proxy.restore()
    assert pg_proxy.port == port
    conn = await connect(port)
    try:
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()
    assert pg_proxy.connections_total == 2


async def test_cut_then_restore_repeatedly(pg_proxy: TcpProxy) -> None:
    for _ in range(3):
        conn = await connect(pg_proxy.port)
        await pg_proxy.cut()
        conn.terminate()
        await pg_proxy.restore()
    conn = await connect(pg_proxy.port)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_cut_with_delayed_data_in_flight(pg_target: tuple[str, int]) -> None:
    proxy = TcpProxy(*pg_target, delay_s=DELAY_S)
    await proxy.start()
    try:
        conn = await connect(proxy.port)
        try:
            query = asyncio.create_task(conn.fetchval("SELECT 1"))
            await wait_until(lambda: proxy.open_connections == 1, timeout_s=WAIT_S)
            await proxy.cut()
            with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresError, OSError)):
                await asyncio.wait_for(query, WAIT_S)
        finally:
            conn.terminate()
        await proxy.restore()
        conn = await connect(proxy.port)
        try:
            assert await conn.fetchval("SELECT 3") == 3
        finally:
            await conn.close()
    finally:
        await proxy.close()
