"""Fault suite, in process: the simulator keeps the truth, every test ends with the ledger."""

from __future__ import annotations

from typing import Any

from ingestor.simulator.world import COPILOT
from tests.conftest import wait_until
from tests.support.pipeline import SimPipelineFactory, copilot_stream
from tests.support.sim import RunningSim, history_diff, history_holds, settle

STREAM = copilot_stream(["NBA", "NCAAB"])


async def test_start_from_empty_database_rehydrates_everything(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running()
    first = len(sim.server.world.log)
    await sim.server.emit(30)  # and the world existed before we connected
    await settle(pg, sim)
    await history_holds(pg, sim, since=first)
    assert p.rehydrations() >= 1
    assert (
        p.sample("ingestor_rest_requests_total", endpoint="/copilot/fixtures/odds", outcome="200")
        >= 2
    )
    assert await p.shutdown() == 0


async def test_cut_in_the_middle_of_an_event(running: SimPipelineFactory, pg: Any) -> None:
    sim, p = await running()
    first = len(sim.server.world.log)
    await sim.server.emit(40)
    await settle(pg, sim)
    assert sim.server.cut_all(mid_frame=True) == 1
    await sim.server.emit(40)
    await settle(pg, sim)
    assert sim.server.connections_total >= 2
    assert p.reconnects("payload_error") + p.reconnects("eof") + p.reconnects("read_error") >= 1
    # The half frame named entry 9999999999999-0: nothing of it may be stored.
    assert not await pg.fetchval("SELECT count(*) FROM odds_history WHERE entry_id LIKE '9999%'")
    await history_holds(pg, sim, since=first)
    assert await p.shutdown() == 0


async def test_feed_restarts_and_ignores_last_entry_id(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running(honour_last_entry_id=False)
    first = len(sim.server.world.log)
    await sim.server.emit(30)
    await settle(pg, sim)
    await sim.stop()
    sim.server.world.emit(60)  # events the daemon never sees on the stream
    await sim.start()
    await settle(pg, sim)
    assert sim.server.connections_total >= 2
    # The 60 events of the gap come back from the vendor's history (the repair).
    await history_holds(pg, sim, since=first)
    assert await pg.fetchval("SELECT count(*) FROM odds_history WHERE event_id = 'repair'") > 0
    assert await p.shutdown() == 0


async def test_feed_honours_last_entry_id_and_replays(running: SimPipelineFactory, pg: Any) -> None:
    sim, p = await running(honour_last_entry_id=True)
    first = len(sim.server.world.log)  # what was there before we connected is not replayed
    await sim.server.emit(30)
    await settle(pg, sim)
    await sim.stop()
    sim.server.world.emit(60)
    await sim.start()
    await settle(pg, sim)
    # Every event arrived exactly once: replay filled the gap, snapshots added no duplicate.
    await wait_until(lambda: p.cursor() == _last_odds_entry(sim))
    assert await history_diff(pg, sim.server.world, complete_from=first) == []
    await history_holds(pg, sim, since=first)
    resumed = [q for path, q in sim.server.requests if path.endswith("/odds") and "stream" in path]
    assert any(k == "last_entry_id" for k, _ in resumed[-1])
    assert await p.shutdown() == 0


def _last_odds_entry(sim: RunningSim) -> str:
    """The newest event the copilot stream carries (the world also feeds the regular stream)."""
    return next(e.entry_id for e in reversed(sim.server.world.log) if e.stream in (None, COPILOT))


async def test_duplicated_and_reordered_entry_ids(running: SimPipelineFactory, pg: Any) -> None:
    sim, p = await running(duplicate_rate=0.3, reorder_rate=0.3)
    first = len(sim.server.world.log)
    for _ in range(5):
        await sim.server.emit(40)
    await settle(pg, sim)
    await history_holds(pg, sim, since=first)
    assert await p.shutdown() == 0


async def test_silent_feed_reconnects_within_the_stall_bound(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running(stall_timeout_s=0.5)
    first = len(sim.server.world.log)
    await sim.server.emit(20)
    await settle(pg, sim)
    sim.server.faults.stall = True  # no events and no pings, connection left open
    await sim.server.emit(20)
    await wait_until(lambda: p.reconnects("stall") >= 1, timeout_s=5)
    sim.server.faults.stall = False
    await settle(pg, sim)
    await history_holds(pg, sim, since=first)
    assert await p.shutdown() == 0
