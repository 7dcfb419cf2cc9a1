"""Two processes on one database: the owner's lock session killed under load while a standby
waits (fencing: nothing stored twice, nothing lost), and the default configuration with a
feed that replays and the vendor page's own example events (dated 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.domain.events import parse_entry_id
from ingestor.simulator.world import LogEntry
from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, start_daemon, write_config
from tests.support.sim import (
    RunningSim,
    connected,
    emitting,
    history_diff,
    history_invariants,
    missing_changes,
    settle,
    start_sim,
)

pytestmark = pytest.mark.e2e

GROUP = "copilot:basketball:NBA+NCAAB"


async def _daemon(tmp_path: Path, sim: RunningSim, database_url: str, **extra: Any) -> Daemon:
    port = free_port()
    config = write_config(
        tmp_path / f"c{port}.toml", sim.base_url, port, leagues=("NBA", "NCAAB"), **extra
    )
    return await start_daemon(config, database_url, port)


async def _owner_lease_pid(pg: Any) -> int | None:
    """The lease session that holds a group lock (more than its member lock)."""
    return await pg.fetchval(  # type: ignore[no-any-return]
        """
        SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l USING (pid)
        WHERE a.application_name = 'ingestor-leases' AND l.locktype = 'advisory'
        GROUP BY a.pid HAVING count(*) > 1
        """
    )


async def _epoch(pg: Any) -> int:
    return int(await pg.fetchval("SELECT epoch FROM stream_cursors WHERE group_key = $1", GROUP))


@pytest.mark.timeout(240)
async def test_a_killed_lock_session_under_load_stores_nothing_twice_and_loses_nothing(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    sim = await start_sim(honour_last_entry_id=True)
    first_log = len(sim.server.world.log)
    # The owner checks its lease seldom, the standby often: the standby claims the group long
    # before the owner notices, and the owner's flushes meanwhile must be fenced out.
    first = await _daemon(tmp_path, sim, database_url, lease_check_s=30.0)
    second: Daemon | None = None
    try:
        await connected(sim, timeout_s=20)
        second = await _daemon(tmp_path, sim, database_url, lease_check_s=0.5)
        await wait_until(lambda: second.log_events("groups_standby"), timeout_s=30)
        epoch = await _epoch(pg)
        async with emitting(sim, per_tick=8):  # under load: ~800 events/s
            await wait_until(lambda: pg.fetchval("SELECT count(*) FROM odds_history"))
            pid = await _owner_lease_pid(pg)
            assert pid is not None
            await pg.execute("SELECT pg_terminate_backend($1)", pid)
            # The standby claims the group (a new epoch) while the first process still
            # streams until its next lease check, and flushes what it queued.
            await wait_until(lambda: _epoch_moved(pg, epoch), timeout_s=30)
            # Fenced: its next flush rolled back, and it gave the group up at once (told by
            # the writer, its coordinator found the lease session gone, or the group lost).
            await wait_until(lambda: first.log_events("group_fenced"), timeout_s=30)
            await wait_until(
                lambda: first.log_events("group_lost") or first.log_events("leases_lost"),
                timeout_s=10,
            )
            await wait_until(lambda: len(sim.server.open) == 1, timeout_s=30)
        await settle(pg, sim, timeout_s=60)
        assert await history_diff(pg, sim.server.world) == []  # not one row twice
        assert await missing_changes(pg, sim.server.world, since=first_log) == []
        assert await history_invariants(pg) == []
        fenced = sum(e["events_dropped"] for e in first.log_events("group_fenced"))
        assert fenced > 0
        print(f"the first process had {fenced} events fenced out")
    finally:
        codes = [await d.stop() for d in (first, second) if d and d.proc.returncode is None]
        await sim.stop()
    assert codes and all(c == 0 for c in codes)


async def _epoch_moved(pg: Any, epoch: int) -> bool:
    return await _epoch(pg) > epoch


# The vendor page's example events (its "Copilot Odds Event" and "Copilot Locked Odds Event"):
# timestamps of October 2024, far past the history's retention.
EXAMPLES = [
    (
        "copilot-odds",
        "1678113258940-2",
        {
            "fixture_id": "4825158B6424",
            "game_id": "16903-41811-2024-10-22",
            "grouping_key": "default:104.5",
            "id": "1:-1:4825158B6424:1st_half_total_points:over_104_5",
            "is_live": False,
            "is_main": False,
            "league": "NBA",
            "market": "1st Half Total Points",
            "name": "Over 104.5",
            "odd_id": "4825158B6424:1st_half_total_points:over_104_5",
            "player_id": "",
            "points": 104.5,
            "price": -196,
            "selection": "",
            "selection_line": "over",
            "sport": "basketball",
            "team_id": "",
            "timestamp": 1729646525,
            "version_id": -1,
        },
    ),
    (
        "copilot-locked-odds",
        "1682600339900-0",
        {
            "fixture_id": "D86AB59E8025",
            "game_id": "19370-30354-2024-10-23",
            "grouping_key": "miami_heat:105.5",
            "id": "1:-1:D86AB59E8025:team_total:miami_heat_over_105_5",
            "is_live": False,
            "is_main": True,
            "league": "NBA",
            "market": "Team Total",
            "name": "Miami Heat Over 105.5",
            "odd_id": "D86AB59E8025:team_total:miami_heat_over_105_5",
            "player_id": "",
            "points": 105.5,
            "price": -103,
            "selection": "Miami Heat",
            "selection_line": "over",
            "sport": "basketball",
            "team_id": "26BB4DC5722F",
            "timestamp": 1729646600,
            "version_id": -1,
        },
    ),
]


def _examples() -> list[LogEntry]:
    return [
        LogEntry(
            entry,
            parse_entry_id(entry),
            event,
            orjson.dumps({"entry_id": entry, "data": [odd], "type": event}),
            "basketball",
            "NBA",
            "copilot",
            None,
        )
        for event, entry, odd in EXAMPLES
    ]


@pytest.mark.timeout(180)
async def test_two_daemons_with_the_default_configuration_keep_every_odds_history(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    """Problem 4 of the issue: the example events ended in `odds` with no history row when a
    second daemon started beside the first (its start-up partition upkeep expired them)."""
    sim = await start_sim(honour_last_entry_id=True)
    first = await _daemon(tmp_path, sim, database_url)
    second: Daemon | None = None
    try:
        await connected(sim, timeout_s=20)
        sim.server.world.log.extend(_examples())  # the feed's first two events
        await sim.server.emit(20)
        ids = [str(odd["id"]) for _, _, odd in EXAMPLES]
        await settle(pg, sim, context="first daemon: ", ignore=frozenset(ids))
        stored = await pg.fetchval("SELECT count(*) FROM odds_history WHERE id = ANY($1)", ids)
        assert stored == 2
        second = await _daemon(tmp_path, sim, database_url)  # default configuration: standby
        await wait_until(lambda: second.log_events("partitions_maintained"), timeout_s=30)
        await wait_until(lambda: second.log_events("groups_standby"), timeout_s=30)
        await sim.server.emit(40)
        assert await first.stop() == 0
        await wait_until(lambda: second.log_events("group_acquired"), timeout_s=30)
        await connected(sim, timeout_s=20)
        await sim.server.emit(40)
        await settle(pg, sim, context="second daemon: ", ignore=frozenset(ids))
        problems = await history_invariants(pg)
        assert problems == []  # every odd has its history, the example ones too
        stored = await pg.fetchval("SELECT count(*) FROM odds_history WHERE id = ANY($1)", ids)
        assert stored == 2
        assert await history_diff(pg, sim.server.world) == []
    finally:
        codes = [await d.stop() for d in (first, second) if d and d.proc.returncode is None]
        await sim.stop()
    assert all(c == 0 for c in codes)
