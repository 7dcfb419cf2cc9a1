"""History you can trust: a feed that never replays and drops connections often, a historical
endpoint with the vendor's limits beside it; the gap ledger, repair, and the invariants."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, start_daemon, write_config
from tests.support.sim import (
    RunningSim,
    connected,
    emitting,
    history_invariants,
    missing_changes,
    settle,
    start_sim,
)

pytestmark = pytest.mark.e2e

# scripts/soak-gaps: stream this long instead of until CUTS cuts (a cut every
# GAPS_SOAK_CUT_EVERY events), then report.
SOAK_S = float(os.environ.get("GAPS_SOAK_SECONDS", "0"))
CUT_EVERY_EVENTS = int(os.environ.get("GAPS_SOAK_CUT_EVERY", "200"))  # "every few hundred"
CUTS = 5


async def _daemon(tmp_path: Path, sim: RunningSim, database_url: str, **extra: Any) -> Daemon:
    port = free_port()
    config = write_config(
        tmp_path / f"c{port}.toml", sim.base_url, port, leagues=("NBA", "NCAAB"), **extra
    )
    return await start_daemon(config, database_url, port)


async def _gaps(pg: Any) -> dict[str, int]:
    rows = await pg.fetch("SELECT state, count(*) AS n FROM stream_gaps GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def _repaired(pg: Any) -> bool:
    gaps = await _gaps(pg)
    return bool(gaps) and set(gaps) == {"repaired"}


@pytest.mark.timeout(300 + 3 * SOAK_S)  # scripts/soak-gaps runs it for SOAK_S seconds
async def test_a_feed_that_never_replays_loses_no_change_once_its_gaps_are_repaired(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    # The vendor asks for 5 s between reconnects (retry:); 1 s here: each gap misses ~100 events.
    sim = await start_sim(
        honour_last_entry_id=False, cut_every_events=CUT_EVERY_EVENTS, retry_ms=1000
    )
    first = len(sim.server.world.log)
    daemon = await _daemon(tmp_path, sim, database_url)
    try:
        await connected(sim, timeout_s=20)
        started = time.monotonic()
        async with emitting(sim, per_tick=1):  # about 100 events/s, a cut every 2 s or so
            await wait_until(
                lambda: (
                    time.monotonic() - started >= SOAK_S
                    if SOAK_S
                    else sim.server.connections_total > CUTS
                ),
                timeout_s=SOAK_S + 90,
                interval_s=0.2,
            )
        streamed_s = time.monotonic() - started
        # The stream has ended; the repair drains within the vendor's budget.
        # (a long soak may leave a backlog: the budget repairs about 6 odds a second)
        await wait_until(lambda: _repaired(pg), timeout_s=150 + SOAK_S, interval_s=0.5)
        await settle(pg, sim)
        missing = await missing_changes(pg, sim.server.world, since=first)
        assert missing == [], f"{len(missing)} changes missing: {missing[:10]}"
        assert await history_invariants(pg) == []
        gaps = await pg.fetch("SELECT * FROM history_gaps ORDER BY gap_id")
        causes = [g["cause"] for g in gaps]
        assert causes.count("reconnect") >= CUTS, causes
        assert sum(g["changes_added"] for g in gaps) > 0  # repair, not luck, closed them
        assert all(g["historical_calls"] >= 0 and g["closed_at"] for g in gaps)
        # Within the vendor's limits: never refused, never more than 10 ids a call.
        assert sim.server.historical_calls > 0 and sim.server.historical_refused == 0
        print(await _report(pg, sim, first, streamed_s, time.monotonic() - started))
    finally:
        code = await daemon.stop()
        await sim.stop()
    assert code == 0


async def _report(pg: Any, sim: RunningSim, first: int, streamed_s: float, total_s: float) -> str:
    """What the feed sent, what history holds and how, and the historical budget spent."""
    sent = sum(
        len(orjson.loads(e.data)["data"])
        for e in sim.server.world.log[first:]
        if e.stream == "copilot"
    )
    rows = {
        r["source"]: r["n"]
        for r in await pg.fetch(
            "SELECT CASE WHEN event_id IN ('snapshot', 'repair') THEN event_id "
            "ELSE 'stream' END AS source, count(*) AS n FROM odds_history GROUP BY 1"
        )
    }
    at = sim.server.historical_at
    busiest = max((sum(1 for t in at if s <= t < s + 15) for s in at), default=0)
    gaps = await pg.fetchval("SELECT count(*) FROM stream_gaps")
    return (
        f"streamed {streamed_s:.0f} s, drained after {total_s:.0f} s: changes sent {sent}, "
        f"history rows {rows}, gaps {gaps}, historical calls {sim.server.historical_calls} "
        f"(refused {sim.server.historical_refused}; busiest 15 s: {busiest} calls; budget "
        f"{total_s / 15 * 10:.0f} calls over the run)"
    )
