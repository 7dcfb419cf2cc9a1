"""/readyz tells the truth: not flaky under load, and only about groups this process owns."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import aiohttp
import pytest

from ingestor.simulator.server import Faults, SimServer
from ingestor.simulator.world import World
from tests.conftest import free_port, wait_until
from tests.support.daemon import start_daemon, write_config
from tests.support.sim import RunningSim

pytestmark = pytest.mark.e2e


async def test_readiness_stays_ready_under_2000_mixed_requests_during_gap_recovery(
    database_url: str, tmp_path: Path
) -> None:
    """It has a connection of its own: gap recovery filling its pool must not time it out."""
    leagues = ("A", "B", "C", "D")
    world = World([("basketball", lg) for lg in leagues], seed=3, fixtures_per_league=40)
    # A slow REST API keeps gap recovery (about 20 calls a group) busy for about 8 s.
    faults = Faults(ping_interval_s=0.5, retry_ms=10, rest_delay_s=0.4)
    sim = await RunningSim(SimServer(world, faults)).start()
    port = free_port()
    config = write_config(
        tmp_path / "c.toml", sim.base_url, port, leagues=leagues, leagues_per_connection=1
    )
    daemon = await start_daemon(config, database_url, port)
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    try:
        await wait_until(lambda: daemon.log_events("rehydrate_started"), timeout_s=20)
        base = f"http://127.0.0.1:{port}"
        paths = ["/readyz", "/metrics", "/healthz", "/readyz"]
        async with aiohttp.ClientSession() as s:

            async def client(i: int) -> None:
                for j in range(100):
                    path = paths[(i + j) % len(paths)]
                    async with s.get(base + path) as resp:
                        await resp.read()
                        statuses[(path, resp.status)] += 1

            recovered_before = len(daemon.log_events("rehydrate_done"))
            await asyncio.gather(*(client(i) for i in range(20)))
            recovered_after = len(daemon.log_events("rehydrate_done"))
        await wait_until(lambda: len(daemon.log_events("rehydrate_done")) >= 4, timeout_s=30)
    finally:
        code = await daemon.stop()
        await sim.stop()
    assert code == 0
    # The whole burst overlapped gap recovery: it had not finished when the last answer came.
    assert recovered_after < len(leagues), (recovered_before, recovered_after)
    assert sum(statuses.values()) == 2000
    assert statuses[("/readyz", 200)] == 1000, statuses
    assert all(status == 200 for (_, status) in statuses), statuses
