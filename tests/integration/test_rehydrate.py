"""Gap recovery: the 5-id cap, the database fallback, the stream's filters, switching it off."""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_until
from tests.support.pipeline import (
    SimPipelineFactory,
    build_pipeline,
    copilot_stream,
    supervise,
)
from tests.support.sim import RunningSim, connected, ledger_diff, start_sim


async def test_odds_calls_carry_at_most_five_fixture_ids(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running()
    await wait_until(lambda: p.rehydrations() >= 1)
    calls = [q for path, q in sim.server.requests if path.endswith("/copilot/fixtures/odds")]
    sizes = [sum(1 for k, _ in q if k == "fixture_id") for q in calls]
    assert sizes and max(sizes) == 5 and sum(sizes) == 2 * len(sim.server.world.fixtures)
    assert all(("settled", "true") in q for q in calls[1::2])  # each chunk asks for settled too


async def test_listing_failure_falls_back_to_known_fixtures(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running(honour_last_entry_id=False)
    await wait_until(lambda: _equal(pg, sim), timeout_s=20)
    sim.server.faults.rest_fail_paths.add("/api/v3/copilot/fixtures")
    await sim.stop()
    for f in sim.server.world.fixtures:  # a gap the stream will not replay
        for o in f.odds:
            o.price += 1
    # Prices changed without events: only a snapshot can tell, and the listing is down.
    for f in sim.server.world.fixtures:
        for o in f.odds:
            o.ts += 1
    await sim.start()
    await wait_until(lambda: _equal(pg, sim), timeout_s=20)
    assert (
        p.sample("ingestor_rest_requests_total", endpoint="/copilot/fixtures", outcome="503") >= 1
    )


async def _equal(pg: Any, sim: RunningSim) -> bool:
    return not await ledger_diff(pg, sim.server.world)


async def test_rehydration_can_be_switched_off(running: SimPipelineFactory, pg: Any) -> None:
    sim, p = await running(rehydrate=False)
    await sim.server.emit(20)
    await wait_until(lambda: p.sample("ingestor_events_committed_total") > 0)
    before = p.sample("ingestor_events_committed_total")
    sim.server.cut_all()  # a reconnect is where gap recovery would run
    await wait_until(lambda: sim.server.connections_total >= 2)
    await sim.server.emit(20)
    await wait_until(lambda: p.sample("ingestor_events_committed_total") > before)
    assert not [path for path, _ in sim.server.requests if "/stream/" not in path]
    assert (
        p.metrics.registry.get_sample_value(
            "ingestor_rehydrations_total", {"group": p.group.key, "result": "complete"}
        )
        is None
    )


async def test_snapshots_honour_every_filter_of_the_stream(database_url: str, pg: Any) -> None:
    """Only what the stream would have sent: REST gets the stream's book, market and price
    format; main/live flags, leagues and fixture ids are applied to what comes back."""
    sim = await start_sim()
    chosen = sim.server.world.fixtures[1]
    stream = copilot_stream(["NBA", "NCAAB"]).model_copy(
        update={
            "markets": ["Point Spread"],
            "is_main": True,
            "odds_format": "DECIMAL",
            "fixture_ids": [chosen.id],
        }
    )
    p = await build_pipeline(database_url, sim, streams=[stream], rehydrate=True)
    supervise(p)
    try:
        await wait_until(lambda: p.rehydrations() >= 1, timeout_s=20)
        await wait_until(lambda: pg.fetchval("SELECT count(*) FROM odds"), timeout_s=20)
        calls = [q for path, q in sim.server.requests if path.endswith("/copilot/fixtures/odds")]
        assert calls and all(("odds_format", "DECIMAL") in q for q in calls)
        assert all(("market", "Point Spread") in q for q in calls)
        assert {v for q in calls for k, v in q if k == "fixture_id"} == {chosen.id}
        rows = await pg.fetch("SELECT fixture_id, market, is_main FROM odds")
        want = {
            o.id
            for o in chosen.odds
            if o.stream == "copilot"
            and o.market == "Point Spread"
            and o.is_main
            and o.status == "open"
        }
        assert len(rows) == len(want) == 2
        assert {(r["fixture_id"], r["market"], r["is_main"]) for r in rows} == {
            (chosen.id, "Point Spread", True)
        }
        fixtures = await pg.fetch("SELECT fixture_id FROM fixtures")
        assert [r["fixture_id"] for r in fixtures] == [chosen.id]
    finally:
        await p.close()
        await sim.stop()


async def test_main_line_that_leaves_the_filter_is_updated(database_url: str, pg: Any) -> None:
    sim = await start_sim()
    stream = copilot_stream(["NBA", "NCAAB"]).model_copy(update={"is_main": True})
    p = await build_pipeline(database_url, sim, streams=[stream], rehydrate=True)
    supervise(p)
    try:
        await connected(sim)
        await sim.server.emit(10)
        await wait_until(lambda: _main_count(pg), timeout_s=20)
        moved = next(
            o for o in sim.server.world.odds("copilot") if o.is_main and o.status == "open"
        )
        moved.is_main = False  # the line moved: no lock event, is_main flips
        moved.ts += 1
        sim.server.cut_all(mid_frame=False)  # the reconnect re-hydrates
        await wait_until(lambda: _is_main(pg, moved.id), timeout_s=20)
    finally:
        await p.close()
        await sim.stop()


async def _main_count(pg: Any) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM odds WHERE is_main"))


async def _is_main(pg: Any, uid: str) -> bool:
    return await pg.fetchval("SELECT is_main FROM odds WHERE id = $1", uid) is False


async def test_a_fixture_first_seen_after_the_connect_gets_its_row_then_its_details(
    running: SimPipelineFactory, pg: Any
) -> None:
    sim, p = await running()
    await wait_until(lambda: p.rehydrations() >= 1)
    world = sim.server.world
    new = world._new_fixture("basketball", "NBA")  # a game added after the listing
    await sim.server.emit(0)  # wake the streams: the new fixture's odds are in the log
    last = next(e.entry_id for e in reversed(world.log) if e.stream == "copilot")

    async def committed_with_its_fixture() -> bool:
        row = await pg.fetchrow(
            "SELECT c.last_entry_id = $1 AS done, f.fixture_id, f.league FROM stream_cursors c"
            " LEFT JOIN fixtures f ON f.fixture_id = $2",
            last,
            new.id,
        )
        if row is None or not row["done"]:
            return False
        # In the same commit as the odd: the fixture's identity, from the odd's own fields.
        assert (row["fixture_id"], row["league"]) == (new.id, "NBA")
        return True

    await wait_until(committed_with_its_fixture, timeout_s=20)
    # Then its details, from the REST listing asked by id.
    await wait_until(
        lambda: pg.fetchval("SELECT home_team_display FROM fixtures WHERE fixture_id = $1", new.id)
    )
    row = await pg.fetchrow("SELECT * FROM fixtures WHERE fixture_id = $1", new.id)
    assert (row["home_team_display"], row["away_team_display"]) == (new.home, new.away)
    assert row["status"] == "unplayed" and row["start_date"] == new.start_date
    asked = [q for path, q in sim.server.requests if path.endswith("/copilot/fixtures")]
    assert any(("id", new.id) in q for q in asked)
    assert p.sample("ingestor_fixture_details_total", outcome="found") >= 1
    # Every odd's fixture has a row.
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM odds o LEFT JOIN fixtures f USING (fixture_id)"
            " WHERE f.fixture_id IS NULL"
        )
        == 0
    )


async def test_a_failed_snapshot_is_taken_again_without_a_reconnect(
    running: SimPipelineFactory, pg: Any
) -> None:
    """REST down at the connect: the snapshot is retried on its own (every
    rehydrate_retry_s, 0.2 s here), not only at the next connect."""
    sim, p = await running(
        honour_last_entry_id=False, rest_fail_paths={"/api/v3/copilot/fixtures/odds"}
    )
    await wait_until(lambda: p.rehydrations("partial") >= 2, timeout_s=20)  # and again
    assert p.rehydrations("complete") == 0
    sim.server.faults.rest_fail_paths.clear()  # the vendor's REST is back
    await wait_until(lambda: p.rehydrations("complete") >= 1, timeout_s=20)
    await wait_until(lambda: _equal(pg, sim), timeout_s=20)
    assert sim.server.connections_total == 1  # no reconnect was needed
