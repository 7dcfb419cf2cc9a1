"""Several daemon processes share the groups through PostgreSQL advisory locks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingestor.simulator.server import Faults, SimServer
from ingestor.simulator.world import World
from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, start_daemon, write_config
from tests.support.sim import RunningSim, history_holds, settle

pytestmark = pytest.mark.e2e

LEAGUES = ("L1", "L2", "L3", "L4", "L5", "L6")
CHECK_S = 0.5
TAKEOVER_BOUND_S = 10.0


async def _sim() -> RunningSim:
    world = World([("basketball", lg) for lg in LEAGUES], seed=11, fixtures_per_league=1)
    return await RunningSim(SimServer(world, Faults(ping_interval_s=0.5, retry_ms=10))).start()


async def _owned(daemon: Daemon) -> int:
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            text = await resp.text()
    except aiohttp.ClientConnectionError:
        return -1
    line = next(ln for ln in text.splitlines() if ln.startswith("ingestor_groups_owned "))
    return int(float(line.split()[1]))


def _streams(sim: RunningSim) -> int:
    return len(sim.server.open)


async def test_groups_are_shared_taken_over_and_rebalanced(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    sim = await _sim()

    async def daemon() -> Daemon:
        port = free_port()
        config = write_config(
            tmp_path / f"d{port}.toml",
            sim.base_url,
            port,
            leagues=LEAGUES,
            leagues_per_connection=1,
            coordination="postgres",
            lease_check_s=CHECK_S,
        )
        return await start_daemon(config, database_url, port)

    daemons = [await daemon() for _ in range(3)]
    first = len(sim.server.world.log)
    try:
        # Three processes, six groups: every group streamed, exactly once, two each.
        await wait_until(lambda: _streams(sim) == 6, timeout_s=30)
        await wait_until(lambda: _all_owned(daemons, [2, 2, 2]), timeout_s=30)
        await sim.server.emit(60)
        await settle(pg, sim)

        victim = daemons.pop(0)
        await victim.kill()  # SIGKILL: its lock session dies with it
        killed_at = time.monotonic()
        await wait_until(
            lambda: _streams(sim) == 6 and _all_owned(daemons, [3, 3]), timeout_s=TAKEOVER_BOUND_S
        )
        takeover_s = time.monotonic() - killed_at
        await sim.server.emit(60)
        await settle(pg, sim)

        daemons.append(await daemon())  # a fourth joins: ceil(6 / 3) = 2 each again
        await wait_until(lambda: _all_owned(daemons, [2, 2, 2]), timeout_s=30)
        await wait_until(lambda: _streams(sim) == 6, timeout_s=30)
        await sim.server.emit(60)
        await settle(pg, sim)
        # Never two connections for one group, at any moment of all of the above, and no
        # history row twice through the takeover and the two hand-backs.
        assert max(sim.server.max_concurrent.values()) == 1, sim.server.max_concurrent
        await history_holds(pg, sim, since=first)
        print(f"takeover after SIGKILL: {takeover_s:.2f}s (lease check every {CHECK_S}s)")
    finally:
        codes = [await d.stop() for d in daemons]
        await sim.stop()
    assert codes == [0] * len(daemons)


async def _all_owned(daemons: list[Daemon], want: list[int]) -> bool:
    got = sorted([await _owned(d) for d in daemons])
    return got == sorted(want)


async def test_a_second_process_with_the_default_configuration_waits_as_a_standby(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    """A rolling update, or a second copy started by mistake: coordination = "none" (the
    default), yet no group is ever streamed twice, nothing deadlocks, both stop in time."""
    leagues = tuple(f"M{i:02d}" for i in range(12))  # 12 leagues: two connections of <= 10
    world = World([("basketball", lg) for lg in leagues], seed=5, fixtures_per_league=1)
    sim = await RunningSim(SimServer(world, Faults(ping_interval_s=0.5, retry_ms=10))).start()

    async def daemon() -> Daemon:
        port = free_port()
        config = write_config(tmp_path / f"d{port}.toml", sim.base_url, port, leagues=leagues)
        return await start_daemon(config, database_url, port)

    start = len(world.log)
    first = await daemon()
    second: Daemon | None = None
    try:
        await wait_until(lambda: _streams(sim) == 2, timeout_s=30)
        second = await daemon()
        await wait_until(lambda: second.log_events("groups_standby"), timeout_s=30)
        assert await _owned(first) == 2 and await _owned(second) == 0
        status, text = await second.readyz()
        assert status == 200 and "standby for 2 group(s)" in text, text
        # The standby says which groups it wants and nothing of their streams (the owner does):
        # the disconnected alert sees every group connected somewhere.
        exported = await second.metrics()
        assert exported.count("ingestor_stream_wanted{") == 2, exported
        assert "ingestor_stream_connected{" not in exported
        assert (await first.metrics()).count("ingestor_stream_connected{") == 2
        await sim.server.emit(80)
        await settle(pg, sim)
        started = time.monotonic()
        assert await first.stop(timeout_s=15) == 0
        assert time.monotonic() - started < 10  # shutdown_timeout_s, the default bound
        await wait_until(lambda: _all_owned([second], [2]), timeout_s=15)
        took_over_s = time.monotonic() - started
        await wait_until(lambda: _streams(sim) == 2, timeout_s=15)
        await sim.server.emit(80)
        await settle(pg, sim)
        assert max(sim.server.max_concurrent.values()) == 1, sim.server.max_concurrent
        await history_holds(pg, sim, since=start)
        print(f"standby took over {took_over_s:.2f}s after SIGTERM of the first process")
    finally:
        codes = [
            await d.stop() for d in (first, second) if d is not None and d.proc.returncode is None
        ]
        await sim.stop()
    assert codes == [0] * len(codes)
    assert second is not None
    for d in (first, second):
        for line in d.lines:
            for bad in (b"DeadlockDetected", b"LockNotAvailable", b"flush_failed"):
                assert bad not in line, line
    assert len(second.log_events("groups_standby")) == 1  # said once, not every round
