"""History at scale: the three analyst queries of the README on 20 million history rows.

A database of its own (``<BENCH_DB>_history``) is migrated and filled in SQL, in time order as
the daemon would write it: a fixture starts every 10 minutes over seven days; each has 150
copilot odds that move for 10 hours before the start and, three times as often, in the 2.5
hours of play, then settle (about 6,300 changes in its busiest hour); five books quote 60 odds
of one more fixture on the regular stream. Then each query runs warm 15 times: the server's
time (EXPLAIN ANALYZE: planning and execution) and the client's round trip, and the plan must
not scan a whole partition.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ingestor.storage.migrations import upgrade
from ingestor.storage.partitions import maintain

DAYS = 7
FIXTURES = 1000
ODDS_PER_FIXTURE = 150
BOOKS = ("draftkings", "fanduel", "betmgm", "caesars", "pointsbet")
BOOKS_FIXTURE = FIXTURES // 2 + 1
RUNS = 15
T0 = datetime(2026, 3, 2, tzinfo=UTC)
SPACING_S = DAYS * 86400 / FIXTURES
PRE_S, PLAY_S = 10 * 3600, 9000

FILL = [
    # Fixtures and their odds (current state), copilot and five books.
    f"""INSERT INTO fixtures (fixture_id, sport, league, home_team_display, away_team_display,
                             start_date, status, source_ts, entry_id, order_key)
    SELECT 'FX' || f, 'basketball', 'NBA', 'Home ' || f, 'Away ' || f,
           $1::timestamptz + (f + 0.5) * interval '{SPACING_S} s', 'completed', now(), '0-0',
           ''::bytea
    FROM generate_series(0, {FIXTURES - 1}) f""",
    f"""INSERT INTO odds (id, stream, sportsbook, fixture_id, league, market, name, points,
                         price, is_main, status, settlement, settled_at, source_ts, entry_id,
                         order_key, odd_key)
    SELECT id, stream, book, 'FX' || f, 'NBA', 'Market ' || (k / 6), 'Selection ' || k,
           (k % 9) + 0.5, -110 - (k % 7) * 5 + b * 5, k % 6 = 0, 'settled', 'Won',
           $1::timestamptz + (f + 0.5) * interval '{SPACING_S} s' + interval '3 hours', now(),
           '0-0', ''::bytea, odd_key(id)
    FROM generate_series(0, {FIXTURES - 1}) f,
         LATERAL (SELECT k, NULL::text AS book, 0 AS b, 'copilot' AS stream,
                         'C:' || f || ':' || k AS id
                  FROM generate_series(0, {ODDS_PER_FIXTURE - 1}) k
                  UNION ALL
                  SELECT k, book, b, 'odds', book || ':' || f || ':' || k
                  FROM generate_series(0, 59) k,
                       unnest($2::text[]) WITH ORDINALITY AS x(book, b)
                  WHERE f = {BOOKS_FIXTURE}) o""",
    # 20 million changes in time order: at each instant one of the fixtures around it (in
    # play three times as often as before it), one of its odds; then every odd's settlement.
    f"""INSERT INTO odds_changes (odd_key, source_ts, ev, price, points)
    SELECT odd_key('C:' || f || ':' || (hashint8(i) & 1073741823) % {ODDS_PER_FIXTURE}), ts,
           ((extract(epoch FROM ts - timestamptz '2020-01-01 00:00:00+00') * 1e6)::bigint
             << 12) | 2,
           -300 + (hashint8(i + 7) & 1073741823) % 600, (hashint8(i + 3) & 15) + 0.5
    FROM (SELECT i, ts,
                 CASE WHEN (hashint8(i + 1) & 3) > 0
                      THEN floor(e / {SPACING_S} - 0.5) - (hashint8(i + 2) & 1073741823)
                           % ceil({PLAY_S / SPACING_S})
                      ELSE floor((e + {PRE_S}) / {SPACING_S} - 0.5) - (hashint8(i + 2)
                           & 1073741823) % ceil({(PRE_S + PLAY_S) / SPACING_S}) END AS f
          FROM (SELECT i, $1::timestamptz + i * ($2::float8 / $3) * interval '1 s' AS ts,
                       i * ($2::float8 / $3) AS e
                FROM generate_series(1, $3::bigint) i) t) s
    WHERE f >= 0 AND f < {FIXTURES}
    ORDER BY ts""",
    f"""INSERT INTO odds_changes (odd_key, source_ts, ev, settlement, settled_at)
    SELECT o.odd_key, f.start_date + interval '3 hours',
           ((extract(epoch FROM f.start_date + interval '3 hours'
                     - timestamptz '2020-01-01 00:00:00+00') * 1e6)::bigint << 12) | (2 << 2),
           1, f.start_date + interval '3 hours'
    FROM fixtures f JOIN odds o USING (fixture_id)
    WHERE o.stream = 'copilot' AND f.start_date + interval '3 hours' < $1::timestamptz
          + interval '{DAYS} days'
    ORDER BY 2""",
]

QUERIES = {
    "a": "SELECT * FROM line_movement($1::text, $2::timestamptz, $3::timestamptz)",
    "b": """SELECT DISTINCT ON (market, name) market, name, points, sportsbook, price
            FROM odds WHERE fixture_id = $1 AND stream = 'odds' AND status = 'open'
            ORDER BY market, name, price DESC""",
    "c": """SELECT market, name, sportsbook, settlement, settled_at, last_price
            FROM settled_odds WHERE fixture_id = $1 ORDER BY market, name, sportsbook""",
}


async def fill(url: str, rows: int) -> dict[str, Any]:
    """Migrate and fill the history database; its size and the time it took."""
    started = time.monotonic()
    await asyncio.to_thread(upgrade, url)
    conn = await asyncpg.connect(url, command_timeout=3600)
    try:
        for day in range(DAYS + 1):
            await maintain(
                conn, today=(T0 + timedelta(days=day)).date(), ahead_days=0, retention_days=3650
            )
        span = DAYS * 86400.0
        await conn.execute(FILL[0], T0)
        await conn.execute(FILL[1], T0, list(BOOKS))
        await conn.execute(FILL[2], T0, span, rows)
        await conn.execute(FILL[3], T0)
        # Open odds for query (b): the books' odds are open now.
        await conn.execute(
            "UPDATE odds SET status = 'open', settlement = NULL WHERE stream = 'odds'"
        )
        await conn.execute("VACUUM ANALYZE odds_changes, odds, fixtures")
        stored = await conn.fetchval("SELECT count(*) FROM odds_changes")
    finally:
        await conn.close()
    return {
        "rows": stored,
        "days": DAYS,
        "fixtures": FIXTURES,
        "seconds": round(time.monotonic() - started),
    }


async def _busiest_hour(conn: asyncpg.Connection, fixture: str) -> tuple[datetime, datetime]:
    """The first whole clock hour of play, where the changes are densest."""
    start = await conn.fetchval("SELECT start_date FROM fixtures WHERE fixture_id = $1", fixture)
    hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return hour, hour + timedelta(hours=1)


async def _timed(conn: asyncpg.Connection, sql: str, *args: Any) -> tuple[float, float, int]:
    """(server ms, client ms, rows) of one warm run."""
    t = time.perf_counter()
    rows = await conn.fetch(sql, *args)
    client = (time.perf_counter() - t) * 1000
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}", *args)
    top = orjson.loads(plan)[0]
    return top["Planning Time"] + top["Execution Time"], client, len(rows)


AUTO_EXPLAIN = [
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on",
    "SET auto_explain.log_timing = off",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_level = notice",
    "SET client_min_messages = notice",
]


async def _plan(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """Every plan the query runs, the statements inside a function included.

    EXPLAIN of ``line_movement()`` shows only a Function Scan; auto_explain at NOTICE level
    sends the plan of the statement the function executes (and of the outer one) to us.
    """
    notices: list[str] = []

    def listen(_conn: Any, message: Any) -> None:
        notices.append(message.message)

    for statement in AUTO_EXPLAIN:
        await conn.execute(statement)
    conn.add_log_listener(listen)
    try:
        await conn.fetch(sql, *args)
    finally:
        conn.remove_log_listener(listen)
        await conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n\n".join(n.split("\n", 1)[-1].rstrip() for n in notices)


async def queries(url: str) -> dict[str, Any]:
    """Median server and client milliseconds of each query over ``RUNS`` warm runs."""
    conn = await asyncpg.connect(url)
    out: dict[str, Any] = {}
    try:
        await conn.execute("SET max_parallel_workers_per_gather = 0")  # one core per query
        fixture = f"FX{FIXTURES // 2}"
        settled = f"FX{FIXTURES // 3}"
        args = {
            "a": (fixture, *await _busiest_hour(conn, fixture)),
            "b": (f"FX{BOOKS_FIXTURE}",),
            "c": (settled,),
        }
        for name, sql in QUERIES.items():
            for _ in range(3):  # warm the cache
                await conn.fetch(sql, *args[name])
            runs = [await _timed(conn, sql, *args[name]) for _ in range(RUNS)]
            server = sorted(r[0] for r in runs)
            client = sorted(r[1] for r in runs)
            plan = await _plan(conn, sql, *args[name])
            if name == "a" and "on odds_changes" not in plan:
                raise RuntimeError(f"no plan inside line_movement() was captured:\n{plan}")
            whole = "Seq Scan on odds_changes" in plan
            out[name] = {
                "rows": runs[0][2],
                "server_ms": round(server[RUNS // 2], 2),
                "server_ms_max": round(server[-1], 2),
                "client_ms": round(client[RUNS // 2], 2),
                "scans_a_whole_partition": whole,
                "plan": plan,
            }
    finally:
        await conn.close()
    return out
