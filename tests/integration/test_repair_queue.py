"""The repair's work queue on generated ledgers: its work query (sql.REPAIR_WORK) answers a
prefix of the plain one it replaced (the same odds, in the same order, with the same oldest
start and the same gaps), never empty while work is left; and a call's end (sql.REPAIRED)
closes exactly the gaps it leaves nothing to do."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ingestor.storage import sql
from ingestor.storage.gaps import PgGapLedger

# Before 0007: every pending pair grouped by odd, then the oldest first.
PLAIN = """
SELECT w.odd_id, g.group_key, min(g.from_ts) AS from_ts,
       array_agg(w.gap_id ORDER BY w.gap_id) AS gaps
FROM stream_gap_odds w JOIN stream_gaps g USING (gap_id)
WHERE g.group_key = ANY($1::text[]) AND g.state = 'repairing' AND NOT w.done
GROUP BY w.odd_id, g.group_key
ORDER BY min(w.gap_id), w.odd_id
LIMIT $2
"""
T0 = datetime(2026, 12, 1, tzinfo=UTC)
STATES = ("open", "repairing", "repairing", "repairing", "repaired")


async def _ledger(pg: Any, rng: random.Random) -> None:
    await pg.execute("TRUNCATE stream_gaps, stream_gap_odds")
    gaps = []
    for i in range(rng.randint(1, 30)):
        gap_id = await pg.fetchval(
            "INSERT INTO stream_gaps (group_key, cause, from_ts, until_ts, state)"
            " VALUES ($1, 'reconnect', $2, $3, $4) RETURNING gap_id",
            rng.choice(("g1", "g2", "g3")),
            T0 + timedelta(seconds=rng.randint(0, 600)),
            T0 + timedelta(seconds=600 + i),
            rng.choice(STATES),
        )
        gaps.append(gap_id)
    odds = [f"odd-{i}" for i in range(rng.randint(1, 40))]
    pairs = {(rng.choice(gaps), rng.choice(odds)) for _ in range(rng.randint(1, 300))}
    await pg.executemany(
        "INSERT INTO stream_gap_odds (gap_id, odd_id, done) VALUES ($1, $2, $3)",
        [(g, o, rng.random() < 0.3) for g, o in pairs],
    )


async def test_the_work_query_answers_a_prefix_of_the_plain_one(pg: Any) -> None:
    rng = random.Random(7)
    shorter = 0
    for _ in range(60):
        await _ledger(pg, rng)
        groups = rng.choice((["g1"], ["g1", "g2"], ["g1", "g2", "g3"]))
        for limit in (1, 3, 10, 40):
            plain = [tuple(r) for r in await pg.fetch(PLAIN, groups, limit)]
            fast = [tuple(r) for r in await pg.fetch(sql.REPAIR_WORK, groups, limit)]
            assert fast == plain[: len(fast)], (groups, limit)
            assert bool(fast) == bool(plain)
            shorter += len(fast) < len(plain)
    # The prefix is shorter when an odd's pairs fill the first ``limit`` pairs: the ledgers
    # make that happen, so the comparison above covers it.
    assert shorter > 0


async def test_a_call_closes_exactly_the_gaps_it_leaves_nothing_to_do(
    database_url: str, pg: Any
) -> None:
    """REPAIRED against a model on generated ledgers: the call's pairs are done, each gap
    counts its own, and a gap is repaired exactly when none of its pairs is left to do."""
    await pg.execute(
        "INSERT INTO stream_cursors (group_key, stream, sport, leagues, epoch)"
        " VALUES ('g1', 'copilot', 'basketball', '{NBA}', 1)"
    )
    ledger = PgGapLedger(database_url)
    rng = random.Random(11)
    try:
        for _ in range(40):
            await _ledger(pg, rng)
            await pg.execute("UPDATE stream_gaps SET group_key = 'g1', state = 'repairing'")
            before = {
                (r["gap_id"], r["odd_id"]): r["done"]
                for r in await pg.fetch("SELECT gap_id, odd_id, done FROM stream_gap_odds")
            }
            work = await ledger.work(["g1"], rng.choice((1, 3, 10)))
            if not work:
                continue
            called = {(g, w.odd_id) for w in work for g in w.gaps}
            # A snapshot scoping meanwhile queues an odd of the call for a gap again: that
            # pair is not the call's, and its gap stays to do.
            late = (rng.choice(sorted({g for g, _ in before})), work[0].odd_id)
            if late not in before and rng.random() < 0.5:
                await pg.execute(
                    "INSERT INTO stream_gap_odds (gap_id, odd_id) VALUES ($1, $2)", *late
                )
                before[late] = False
            assert await ledger.repaired(work, 5, "g1", 1)
            pending = {p for p, done in before.items() if not done and p not in called}
            gaps = {r["gap_id"]: r for r in await pg.fetch("SELECT * FROM stream_gaps")}
            for gap_id, g in gaps.items():
                mine = sum(1 for p in called if p[0] == gap_id)
                assert g["odds_repaired"] == mine
                left = any(p[0] == gap_id for p in pending)
                expected = "repaired" if mine and not left else "repairing"
                assert g["state"] == expected, (gap_id, mine, left)
                oldest = gap_id == min(p[0] for p in called)
                assert (g["historical_calls"], g["changes_added"]) == ((1, 5) if oldest else (0, 0))
    finally:
        await ledger.close_pool()
