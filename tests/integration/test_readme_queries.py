"""The README's example queries run against data written by the real writer."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.support.fakefeed import odd, settled_odd
from tests.support.helpers import event, write_batches

README = Path(__file__).parents[2] / "README.md"
LOCKED = "1:-1:D86AB59E8025:team_total:miami_heat_over_105_5"
MOVING = "1:-1:4825158B6424:1st_half_total_points:over_104_5"


def readme_queries() -> list[str]:
    """The ```sql blocks of the README, in order."""
    return re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)


def readme_query(question: str) -> str:
    """The README's one SQL block whose first comment line starts with ``question``."""
    (found,) = [q for q in readme_queries() if q.startswith(f"-- {question}")]
    return found


async def test_readme_queries_answer_their_questions(database_url: str, pg: Any) -> None:
    spread = readme_query("current main-line spread")
    locked_at = readme_query("when was this line locked")
    moves = readme_query("how did this price move today")
    # Just after midnight "today" is short: keep every timestamp inside the server's today.
    midnight = await pg.fetchval("SELECT extract(epoch FROM date_trunc('day', now()))")
    now = max(time.time(), float(midnight) + 101)
    home = {"market": "Point Spread", "fixture_id": "G1"}
    fixture = {
        "fixture": {"id": "G1", "home_team_display": "Celtics", "away_team_display": "Knicks"},
        "fixture_id": "G1",
        "league": "NBA",
        "sport": "basketball",
        "timestamp": now - 100,
        "new_status": None,
        "old_status": None,
        "new_start_date": None,
        "old_start_date": None,
    }
    await write_batches(
        database_url,
        [
            event("fixture-status", "1-0", payload={"entry_id": "1-0", "data": fixture}),
            event(
                "copilot-odds",
                "2-0",
                [
                    odd("s1", name="Celtics -3.5", points=-3.5, price=-110, ts=now - 50, **home),
                    odd(
                        "s2",
                        name="Celtics -5.5",
                        points=-5.5,
                        price=120,
                        ts=now - 50,
                        is_main=False,
                        **home,
                    ),
                    odd("s3", name="Knicks +3.5", points=3.5, price=-110, ts=now - 50, **home),
                    odd(MOVING, price=-150, ts=now - 40),
                    odd(LOCKED, price=-101, ts=now - 30),
                ],
            ),
            event("copilot-odds", "3-0", [odd(MOVING, price=-160, ts=now - 20)]),
            event(
                "copilot-locked-odds",
                "4-0",
                [odd(LOCKED, price=-103, ts=now - 10), odd("s3", price=-110, ts=now - 12, **home)],
            ),
        ],
    )
    rows = await pg.fetch(spread)
    assert [(r["name"], r["points"], r["home_team_display"], r["stream"]) for r in rows] == [
        ("Celtics -3.5", -3.5, "Celtics", "copilot")  # the alternate and the locked line are out
    ]
    rows = await pg.fetch(locked_at)  # the odd locked last: LOCKED (s3 was locked before it)
    assert [(r["id"], r["price"]) for r in rows] == [(LOCKED, -103)]
    rows = await pg.fetch(moves)  # MOVING and LOCKED changed twice each: the first id wins
    assert [(r["id"], r["kind"], r["price"]) for r in rows] == [
        (MOVING, "odds", -150),
        (MOVING, "odds", -160),
    ]


async def test_the_analyst_queries_answer_theirs(database_url: str, pg: Any) -> None:
    movement = readme_query("(a) the line movement")
    best = readme_query("(b) the best current price")
    settled = readme_query("(c) all settled odds")
    now = time.time()
    a = {"fixture_id": "FIX-A", "market": "Moneyline"}
    b = {"fixture_id": "FIX-B", "market": "Moneyline", "name": "Celtics"}
    c: dict[str, Any] = {"fixture_id": "FIX-C", "market": "Total Points", "name": "Over 210.5"}
    books = [("draftkings", -120), ("fanduel", -105), ("betmgm", -110)]
    old = now - 2 * 3600  # outside the hour
    await write_batches(
        database_url,
        [
            event("copilot-odds", "1-0", [odd("a1", price=-110, ts=old, **a)]),
            event(
                "copilot-odds",
                "2-0",
                [
                    odd("a1", price=-115, ts=now - 600, **a),
                    odd("a2", price=1.91, ts=now - 500, **a),
                    # FIX-A has the most odds updated in the hour: the query picks it
                    odd("a3", price=-105, ts=now - 450, **a),
                    odd("a4", price=2.05, ts=now - 400, **a),
                ],
            ),
            event(
                "odds",
                "3-0",
                [odd(f"{bk}:b", price=p, ts=now - 60, sportsbook=bk, **b) for bk, p in books],
                stream="odds",
            ),
            event(
                "odds",
                "4-0",
                [
                    odd(f"{bk}:c", price=-110, ts=now - 50, sportsbook=bk, **c)
                    for bk, _ in books[:2]
                ],
                stream="odds",
            ),
            event(
                "copilot-settled-odds",
                "5-0",
                [settled_odd(f"{bk}:c", ts=now - 40, sportsbook=bk, **c) for bk, _ in books[:2]],
            ),
        ],
    )
    rows = await pg.fetch(movement)
    assert [(r["id"], r["kind"], r["price"]) for r in rows] == [
        ("a1", "odds", -115),
        ("a2", "odds", 1.91),
        ("a3", "odds", -105),
        ("a4", "odds", 2.05),
    ]  # the change two hours ago is outside the window; 1.91 comes back exact
    rows = await pg.fetch(best)
    assert [(r["name"], r["sportsbook"], r["price"]) for r in rows] == [
        ("Celtics", "fanduel", -105)
    ]
    rows = await pg.fetch(settled)
    assert [(r["sportsbook"], r["settlement"], r["last_price"]) for r in rows] == [
        ("draftkings", "Won", -110),
        ("fanduel", "Won", -110),
    ]


async def test_the_gap_queries_say_where_history_is_incomplete(database_url: str, pg: Any) -> None:
    complete = readme_query("fixtures whose history over the last hour is complete")
    ledger = readme_query("the gap ledger")
    now = time.time()
    await write_batches(
        database_url,
        [event("copilot-odds", "1-0", [odd("g1", ts=now - 60, fixture_id="FIX-G")])],
    )
    assert [(r["fixture_id"], r["history_complete"]) for r in await pg.fetch(complete)] == [
        ("FIX-G", True)
    ]
    group = await pg.fetchval("SELECT group_key FROM stream_cursors")
    await pg.execute(
        "UPDATE stream_cursors SET stream = 'copilot', sport = 'basketball', leagues = '{NBA}'"
    )
    await pg.execute(
        "INSERT INTO stream_gaps (group_key, cause, from_ts, until_ts) "
        "VALUES ($1, 'reconnect', now() - interval '5 minutes', now() - interval '4 minutes')",
        group,
    )
    assert [r["history_complete"] for r in await pg.fetch(complete)] == [False]
    (gap,) = await pg.fetch(ledger)
    assert (gap["group_key"], gap["cause"], gap["state"]) == (group, "reconnect", "open")
    await pg.execute("UPDATE stream_gaps SET state = 'repaired'")
    assert [r["history_complete"] for r in await pg.fetch(complete)] == [True]
