"""The simulator's world is what a newcomer judges the product by: its settlements must be
ones a bettor would accept."""

from __future__ import annotations

from collections import defaultdict

from ingestor.simulator.world import COPILOT, SimOdd, World, settlement


def test_every_settled_fixture_settles_on_one_final_score() -> None:
    world = World([("basketball", "NBA"), ("basketball", "NCAAB")], seed=3, fixtures_per_league=4)
    world.emit(4000)
    settled = [o for o in world.odds(COPILOT) if o.status == "settled"]
    assert len(settled) > 100  # enough games finished to judge
    by_fixture: dict[str, list[SimOdd]] = defaultdict(list)
    for o in settled:
        by_fixture[o.fixture.id].append(o)
    for odds in by_fixture.values():
        f = odds[0].fixture
        assert f.score is not None and f.score[0] != f.score[1]
        home, away = f.score
        for o in odds:
            # Consistent with the one score, whatever the market.
            assert o.settlement == settlement(o, home, away), (o.id, o.settlement, f.score)
            assert o.settlement not in ("Half Won", "Half Lost")  # no quarter lines here
        by_market: dict[tuple[str, float | None], list[str]] = defaultdict(list)
        for o in odds:
            if o.market == "Moneyline":
                by_market[("Moneyline", None)].append(o.settlement or "")
            elif o.market == "Total Points":
                by_market[("Total Points", o.points)].append(o.settlement or "")
        for results in by_market.values():
            if len(results) == 2:  # both sides settled: one won, the other lost
                assert sorted(results) == ["Lost", "Won"], (f.id, by_market)


def test_lines_settle_as_a_bettor_expects() -> None:
    world = World([("basketball", "NBA")], seed=1, fixtures_per_league=1)
    f = world.fixtures[0]
    odds = {(o.market, o.name): o for o in f.odds if o.stream == COPILOT}
    spread = next(o for o in odds.values() if o.market == "Point Spread" and o.is_main)
    total = next(o for o in odds.values() if o.market == "Total Points" and o.is_main)
    # The home side gives the spread (-3.5, say): winning by its number and a half covers it,
    # and the away side's +3.5 of the same market loses.
    line = abs(spread.points or 0.0)
    home, away = 110, 110 - int(line + 0.5)
    sides = {o.selection: o for o in odds.values() if o.market == "Point Spread" and o.is_main}
    assert settlement(sides[f.home], home, away) == "Won"
    assert settlement(sides[f.away], home, away) == "Lost"
    over = total.points or 0
    assert settlement(total, int(over + 0.5), 0) == (
        "Won" if total.selection_line == "over" else "Lost"
    )
    quarter = SimOdd(
        "q", COPILOT, None, f, "Total Points", "Over 210.25", "", "over", 210.25, 100, True
    )
    assert settlement(quarter, 110, 100) == "Half Lost"  # 210: a quarter short
    assert settlement(quarter, 110, 101) == "Won"
    whole = SimOdd("w", COPILOT, None, f, "Total Points", "Over 210", "", "over", 210.0, 100, True)
    assert settlement(whole, 110, 100) == "Refunded"
