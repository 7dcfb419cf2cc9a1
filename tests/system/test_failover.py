"""Database failover: a real primary and streaming standby, the daemon given both hosts, the
primary killed mid-stream and the standby promoted. History stays exact when the standby was
caught up (a synchronous standby: every commit the daemon saw acknowledged is on it), and when
it lagged and acknowledged commits were lost (the database's cursor is behind what the daemon
committed: the difference becomes a gap, and is repaired)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import free_port, wait_until
from tests.support.cluster import Replicated, start_replicated
from tests.support.daemon import Daemon, run_cli, start_daemon, write_config
from tests.support.sim import (
    RunningSim,
    connected,
    emitting,
    history_invariants,
    ledger_quiet,
    missing_changes,
    settle,
    start_sim,
)

pytestmark = pytest.mark.e2e

DB = "odds"
LAG_S = 3.0  # the figure: replication cut this long before the primary dies


@pytest.fixture
async def cluster() -> AsyncIterator[Replicated]:
    ha = await start_replicated(DB)
    try:
        yield ha
    finally:
        await ha.stop()


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=10)


async def _caught_up(primary: asyncpg.Connection) -> bool:
    lag = await primary.fetchval(
        "SELECT bool_and(replay_lsn = pg_current_wal_lsn()) AND count(*) > 0 "
        "FROM pg_stat_replication"
    )
    return bool(lag)


async def _synchronous(primary: asyncpg.Connection) -> None:
    """Commits wait for the standby: "caught up" at the instant of the kill, by construction.
    An asynchronous standby checked as caught up a moment before still misses the commits of
    that moment (the CI failure of 2026-12-05: the last 11 ms of commits lost, a `failover` gap
    in the caught-up test)."""
    await primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
    await primary.execute("SELECT pg_reload_conf()")

    async def sync() -> bool:
        state = await primary.fetchval(
            "SELECT bool_and(sync_state = 'sync') FROM pg_stat_replication"
        )
        return bool(state)

    await wait_until(sync, timeout_s=30)


async def _cursor(conn: asyncpg.Connection) -> str | None:
    return await conn.fetchval("SELECT max(last_entry_id) FROM stream_cursors")  # type: ignore[no-any-return]


async def _start(tmp_path: Path, sim: RunningSim, url: str) -> Daemon:
    port = free_port()
    config = write_config(
        tmp_path / f"c{port}.toml",
        sim.base_url,
        port,
        leagues=("NBA", "NCAAB"),
        flush_retry_max_s=1.0,
        lease_check_s=1.0,
    )
    return await start_daemon(config, url, port)


async def _failover(cluster: Replicated, tmp_path: Path, *, lose_commits: bool) -> dict[str, Any]:
    url = cluster.url(DB)
    code, out = await run_cli("migrate", env={"INGESTOR_DATABASE_URL": url})
    assert code == 0, out  # a URL naming both hosts: one line, no traceback
    sim = await start_sim(honour_last_entry_id=False)
    first = len(sim.server.world.log)
    daemon = await _start(tmp_path, sim, url)
    primary = await _connect(cluster.primary.url(DB))
    try:
        if not lose_commits:
            await _synchronous(primary)
        await connected(sim, timeout_s=30)
        async with emitting(sim, per_tick=1):
            await wait_until(lambda: _cursor(primary), timeout_s=30)
            await wait_until(lambda: _caught_up(primary), timeout_s=30)
            await _analyst_reads_the_standby(cluster, primary)
            if lose_commits:
                await cluster.link.cut()  # the standby hears no more; the primary goes on
                before = await _cursor(primary)
                started = time.monotonic()
                await wait_until(lambda: time.monotonic() - started >= LAG_S, interval_s=0.2)
                lost_upto = await _cursor(primary)
                assert lost_upto != before  # commits the standby never got
            await primary.close()
            await cluster.kill_primary()
            await cluster.promote()
            promoted = await _connect(cluster.standby.url(DB))
            mark = len(sim.server.world.log)
            await wait_until(
                lambda: _committed_after(promoted, sim, mark), timeout_s=60, interval_s=0.5
            )
        assert daemon.proc.returncode is None  # never restarted by hand, never died
        # Quiet, not only repaired: the group taken again after the lost lease records its
        # start gap a moment after its first commit on the promoted server (CI, 2026-12-05:
        # checked in between, 41 changes of that stretch read as missing, no gap beside them).
        await wait_until(lambda: ledger_quiet(promoted, 3), timeout_s=150, interval_s=0.5)
        await settle(promoted, sim, timeout_s=60)
        missing = await missing_changes(promoted, sim.server.world, since=first)
        assert missing == [], f"{len(missing)} changes missing: {missing[:10]}"
        assert await history_invariants(promoted) == []
        gaps = [dict(r) for r in await promoted.fetch("SELECT * FROM history_gaps")]
        code, out = await run_cli("partitions", env={"INGESTOR_DATABASE_URL": url})
        assert code == 0, out
        await promoted.close()
        return {"gaps": gaps, "daemon": daemon}
    finally:
        if not primary.is_closed():
            await primary.close()
        if daemon.proc.returncode is None:
            assert await daemon.stop() == 0
        await sim.stop()


async def _analyst_reads_the_standby(cluster: Replicated, primary: asyncpg.Connection) -> None:
    """The read-only role of analysts, pointed at the hot standby (README's URL): the views
    and the functions work there."""
    await primary.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst') THEN "
        "CREATE ROLE analyst LOGIN; END IF; END $$; "
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst"
    )
    await wait_until(lambda: _caught_up(primary), timeout_s=30)
    hosts = f"127.0.0.1:{cluster.standby.port}"
    reader = await _connect(f"postgresql://analyst@{hosts}/{DB}?target_session_attrs=standby")
    try:
        assert await reader.fetchval("SELECT pg_is_in_recovery()")
        fixture = await reader.fetchval("SELECT fixture_id FROM odds_history LIMIT 1")
        assert fixture is not None
        moves = await reader.fetch(
            "SELECT * FROM line_movement($1, now() - interval '1 day', now() + interval '1 day')",
            fixture,
        )
        assert moves
        for view in (
            "odds_history",
            "open_odds",
            "settled_odds",
            "history_gaps",
            "fixture_history_gaps",
        ):
            await reader.fetch(f"SELECT * FROM {view} LIMIT 5")
        complete = await reader.fetchval(
            "SELECT history_complete($1, now() - interval '1 hour', now())", fixture
        )
        assert complete in (True, False)
    finally:
        await reader.close()


async def _committed_after(conn: asyncpg.Connection, sim: RunningSim, mark: int) -> bool:
    """The daemon commits on the promoted server events emitted after the failover."""
    try:
        cursor = await _cursor(conn)
    except (OSError, asyncpg.PostgresError):
        return False
    later = sim.server.world.log[mark:]
    return cursor is not None and bool(later) and cursor >= later[0].entry_id


@pytest.mark.timeout(420)
async def test_failover_to_a_caught_up_standby_keeps_history_exact(
    cluster: Replicated, tmp_path: Path
) -> None:
    result = await _failover(cluster, tmp_path, lose_commits=False)
    assert not any(g["cause"] == "failover" for g in result["gaps"])  # nothing was lost


@pytest.mark.timeout(420)
async def test_commits_a_lagging_standby_lost_become_a_gap_and_are_repaired(
    cluster: Replicated, tmp_path: Path
) -> None:
    result = await _failover(cluster, tmp_path, lose_commits=True)
    failover = [g for g in result["gaps"] if g["cause"] == "failover"]
    assert failover, result["gaps"]
    assert all(g["state"] == "repaired" for g in failover)
    assert result["daemon"].log_events("commits_lost")
