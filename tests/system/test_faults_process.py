"""Fault suite with the real daemon process: SIGKILL, a 30 s database outage, SIGTERM under load."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loopback.tcpproxy import TcpProxy
from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, start_daemon, write_config
from tests.support.sim import (
    RunningSim,
    connected,
    emitting,
    history_diff,
    history_holds,
    history_invariants,
    settle,
    start_sim,
)

pytestmark = pytest.mark.e2e

GROUP = "copilot:basketball:NBA+NCAAB"
OUTAGE_S = 30.0  # the figure: long enough for every retry path to run many times
RSS_BOUND_MB = 200.0


async def _cursor(pg: Any) -> str | None:
    return await pg.fetchval(  # type: ignore[no-any-return]
        "SELECT last_entry_id FROM stream_cursors WHERE group_key = $1", GROUP
    )


async def _daemon(tmp_path: Path, sim: RunningSim, database_url: str, **extra: Any) -> Daemon:
    port = free_port()
    config = write_config(
        tmp_path / f"c{port}.toml", sim.base_url, port, leagues=("NBA", "NCAAB"), **extra
    )
    return await start_daemon(config, database_url, port)


async def test_sigkill_mid_batch_resumes_from_the_committed_cursor(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    sim = await start_sim(honour_last_entry_id=True)
    daemon = await _daemon(tmp_path, sim, database_url)
    try:
        await connected(sim, timeout_s=20)
        first = len(sim.server.world.log)
        async with emitting(sim, per_tick=10):
            await wait_until(lambda: _cursor(pg), timeout_s=20)
            await daemon.kill()  # while events stream in and batches are in flight
            committed = await _cursor(pg)
            await sim.server.emit(50)  # while it is dead
        daemon = await _daemon(tmp_path, sim, database_url)
        await connected(sim, timeout_s=20)
        resumed = [q for path, q in sim.server.requests if "/stream/" in path][-1]
        assert ("last_entry_id", committed) in resumed
        await settle(pg, sim)
        # Replay from the cursor means every event since the first connect is stored once.
        assert await history_diff(pg, sim.server.world, complete_from=first) == []
        await history_holds(pg, sim, since=first)
    finally:
        code = await daemon.stop()
        await sim.stop()
    assert code == 0


async def test_database_outage_of_30_s(database_url: str, pg: Any, tmp_path: Path) -> None:
    host, _, rest = database_url.removeprefix("postgresql://").partition("@")[2].partition(":")
    port, _, dbname = rest.partition("/")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    via_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}"
    sim = await start_sim()
    daemon = await _daemon(tmp_path, sim, via_proxy, flush_retry_max_s=2.0)
    try:
        await connected(sim, timeout_s=20)
        first = len(sim.server.world.log)
        async with emitting(sim):
            await settle(pg, sim)
            await proxy.cut()
            started = time.monotonic()
            await wait_until(lambda: _logged(daemon, "flush_failed"), timeout_s=20)
            # The outage itself: it lasts OUTAGE_S while the feed keeps sending.
            await wait_until(
                lambda: time.monotonic() - started >= OUTAGE_S,
                timeout_s=OUTAGE_S + 5,
                interval_s=0.5,
            )
            assert daemon.proc.returncode is None, "the daemon died during the outage"
            status, body = await daemon.readyz()
            assert status == 503 and "database unreachable" in body
            peak = daemon.peak_rss_mb()
            await proxy.restore()
        await settle(pg, sim, timeout_s=60)
        await history_holds(pg, sim, since=first)
        assert (await daemon.readyz())[0] == 200
        assert daemon.peak_rss_mb() < RSS_BOUND_MB
        print(
            f"outage {OUTAGE_S:.0f}s: peak RSS {peak:.0f} MB during, "
            f"{daemon.peak_rss_mb():.0f} MB after; flush_failed logged "
            f"{len(daemon.log_events('flush_failed'))} times"
        )
    finally:
        code = await daemon.stop()
        await sim.stop()
        await proxy.close()
    assert code == 0


def _logged(daemon: Daemon, event: str) -> bool:
    return any(f'"event":"{event}"'.encode() in line for line in daemon.lines)


async def test_sigterm_under_load_loses_nothing_accepted(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    sim = await start_sim()
    daemon = await _daemon(tmp_path, sim, database_url)
    await connected(sim, timeout_s=20)
    first = len(sim.server.world.log)
    async with emitting(sim, per_tick=20):
        await wait_until(lambda: _cursor(pg), timeout_s=20)
        started = time.monotonic()
        code = await daemon.stop(timeout_s=15)
        took = time.monotonic() - started
    await sim.stop()
    assert code == 0
    assert took < 10, took  # the default shutdown_timeout_s
    (done,) = daemon.log_events("shutdown_complete")
    assert done["events_queued"] == done["events_committed"] > 0
    # Every event up to the committed cursor is stored; the cursor moved past all of them.
    cursor = await _cursor(pg)
    assert await history_diff(pg, sim.server.world, complete_from=first, upto=cursor) == []
    assert await history_invariants(pg) == []


async def test_rehydrate_false_in_the_config_asks_rest_nothing_across_reconnects(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    sim = await start_sim()
    daemon = await _daemon(tmp_path, sim, database_url, rehydrate=False)
    try:
        await connected(sim, timeout_s=20)
        sim.server.cut_all(mid_frame=True)  # a gap: with rehydrate on, a snapshot would follow
        await wait_until(lambda: sim.server.connections_total >= 2, timeout_s=20)
        await connected(sim, timeout_s=20)
        await sim.server.emit(20)
        await wait_until(lambda: _cursor(pg), timeout_s=20)  # it streams and commits
    finally:
        code = await daemon.stop()
        await sim.stop()
    assert code == 0
    assert [path for path, _ in sim.server.requests if "/stream/" not in path] == []
    assert daemon.log_events("rehydrate_started") == []
