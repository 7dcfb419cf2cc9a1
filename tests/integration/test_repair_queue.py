"""The repair's work query (sql.REPAIR_WORK) against the plain one it replaced: on generated
ledgers, its answer is always a prefix of the plain query's (the same odds, in the same
order, with the same oldest start and the same gaps), and never empty while work is left."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ingestor.storage import sql

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
