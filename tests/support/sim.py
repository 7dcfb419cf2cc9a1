"""Running the simulator in tests, and the ledger check: the database equals the world."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ingestor.domain.events import parse_entry_id
from ingestor.simulator.server import Faults, SimServer
from ingestor.simulator.world import COPILOT, World
from loopback.listening import loopback_socket, stop_accepting

LEAGUES = [("basketball", "NBA"), ("basketball", "NCAAB")]


@dataclass
class RunningSim:
    """A simulator listening on loopback; ``restart`` keeps the port."""

    server: SimServer
    runner: web.AppRunner | None = None
    port: int = 0
    _sock: socket.socket | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The API root, as the daemon's ``api_base_url``."""
        return f"http://127.0.0.1:{self.port}/api/v3"

    async def start(self) -> RunningSim:
        """Listen (on the same port as before, after a stop)."""
        self.runner = web.AppRunner(self.server.app(), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        self._sock = loopback_socket(self.port)
        self.port = self._sock.getsockname()[1]
        await web.SockSite(self.runner, self._sock).start()
        return self

    async def stop(self) -> None:
        """Kill every stream mid-frame and stop listening (the feed server goes away)."""
        self.server.cut_all()
        if self.runner is not None:
            if self._sock is not None:
                await stop_accepting([self._sock])  # the daemon reconnects meanwhile
            await self.runner.cleanup()
            self.runner = None


async def connected(sim: RunningSim, n: int = 1, timeout_s: float = 10) -> None:
    """Until ``n`` streams are open on the simulator."""
    from tests.conftest import wait_until

    await wait_until(lambda: len(sim.server.open) >= n, timeout_s=timeout_s)


@contextlib.asynccontextmanager
async def emitting(sim: RunningSim, per_tick: int = 3) -> AsyncIterator[None]:
    """Keep the world moving (about 300 events/s) while the body runs."""

    async def loop() -> None:
        while True:
            await sim.server.emit(per_tick)
            await asyncio.sleep(0.01)  # pacing of the load, not synchronisation

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def start_sim(seed: int = 7, **faults: Any) -> RunningSim:
    """A world of two basketball leagues behind a started server with quick pings."""
    world = World(LEAGUES, seed=seed, fixtures_per_league=3)
    f = Faults(**{"ping_interval_s": 0.5, "retry_ms": 10, **faults})
    return await RunningSim(SimServer(world, f)).start()


async def ledger_diff(pg: Any, world: World, ignore: frozenset[str] = frozenset()) -> list[str]:
    """What differs between ``odds``/``fixtures`` and the world's true state (empty: equal).

    A locked odd may be absent and its price is not compared: a lock missed during a gap is
    inferred from the snapshot (locked odds are not returned), keeping the last price seen.
    """
    rows = {r["id"]: r for r in await pg.fetch("SELECT * FROM odds WHERE stream = 'copilot'")}
    truth = {o.id: o for o in world.odds(COPILOT)}
    # An odd first locked while the daemon was away is invisible: REST returns open and
    # settled odds only. Absent is then right; any other odd must be there.
    diff = [f"missing {i}" for i in truth.keys() - rows.keys() if truth[i].status != "locked"]
    diff += [f"unexpected {i}" for i in rows.keys() - truth.keys() - ignore]
    for uid in truth.keys() & rows.keys():
        o, r = truth[uid], rows[uid]
        want: tuple[Any, ...] = (o.status, o.settlement)
        got: tuple[Any, ...] = (r["status"], r["settlement"])
        if o.status != "locked":
            want, got = (*want, o.price, o.points), (*got, r["price"], r["points"])
        if want != got:
            diff.append(f"{uid}: want {want} got {got}")
    fixtures = {r["fixture_id"]: r["status"] for r in await pg.fetch("SELECT * FROM fixtures")}
    for f in world.fixtures:
        # No status known yet (no row, or a row made from an odd) is the world's "unplayed".
        if (fixtures.get(f.id) or "unplayed") != f.status:
            diff.append(f"fixture {f.id}: want {f.status} got {fixtures.get(f.id)}")
    return sorted(diff)


async def history_diff(
    pg: Any, world: World, *, complete_from: int | None = None, upto: str | None = None
) -> list[str]:
    """Streamed history rows are world events, each once; with ``complete_from``, every
    event from that log position on (up to entry ``upto``) is there too."""
    last = parse_entry_id(upto) if upto else (2**63, 0)
    want: set[tuple[str, str, str]] = set()
    kinds = {
        "copilot-odds": "odds",
        "copilot-locked-odds": "locked",
        "copilot-settled-odds": "settled",
    }
    must: set[tuple[str, str, str]] = set()
    for i, e in enumerate(world.log):
        if e.event in kinds:
            for item in orjson.loads(e.data)["data"]:
                want.add((item["id"], e.entry_id, kinds[e.event]))
                if complete_from is not None and i >= complete_from and e.key <= last:
                    must.add((item["id"], e.entry_id, kinds[e.event]))
    rows = await pg.fetch(
        "SELECT id, entry_id, kind FROM odds_history WHERE event_id NOT IN ('snapshot', 'repair')"
    )
    got = Counter((r["id"], r["entry_id"], r["kind"]) for r in rows)
    diff = [f"duplicate {g}" for g, n in got.items() if n > 1][:5]
    diff += [f"never sent {g}" for g in got.keys() - want][:5]
    diff += [f"not stored {g}" for g in must - got.keys()][:5]
    return diff


async def settle(
    pg: Any,
    sim: RunningSim,
    timeout_s: float = 30,
    context: str = "",
    ignore: frozenset[str] = frozenset(),
) -> None:
    """Wait until the database equals the world; fail with the difference otherwise."""
    from tests.conftest import wait_until

    last: list[str] = []

    async def equal() -> bool:
        nonlocal last
        last = await ledger_diff(pg, sim.server.world, ignore)
        return not last

    try:
        await wait_until(equal, timeout_s=timeout_s, interval_s=0.1)
    except AssertionError:
        raise AssertionError(f"{context}ledger differs: {last[:10]}") from None


KINDS = {
    "copilot-odds": "odds",
    "copilot-locked-odds": "locked",
    "copilot-settled-odds": "settled",
}


async def history_invariants(pg: Any) -> list[str]:
    """What must always hold of history, whatever happened: every ``odds`` row has a history
    row, and its newest is the state ``odds`` holds (no row is newer than the odd's time; at
    that time a row of the odd's status, the latest entry of those, carries its price); no
    change is stored twice (a streamed row twice under its entry id, or a row made from REST
    beside another row of the same odd, time and kind)."""
    problems: list[str] = []
    rows = await pg.fetch(
        """
        SELECT o.id, o.status, o.price, o.source_ts, h.kind, h.price AS h_price,
               h.source_ts AS h_ts, newest.ts AS newest_ts
        FROM odds o
        LEFT JOIN LATERAL (SELECT max(source_ts) AS ts FROM odds_history h
                           WHERE h.odd_key = o.odd_key) newest ON true
        LEFT JOIN LATERAL (
            SELECT kind, price, source_ts FROM odds_history h
            WHERE h.odd_key = o.odd_key AND h.source_ts = newest.ts
              AND h.kind = (ARRAY['odds', 'locked', 'settled'])[
                  array_position(ARRAY['open', 'locked', 'settled'], o.status)]
            ORDER BY split_part(h.entry_id, '-', 1)::numeric DESC NULLS LAST,
                     split_part(h.entry_id, '-', 2)::numeric DESC NULLS LAST
            LIMIT 1) h ON true
        """
    )
    for r in rows:
        if r["newest_ts"] is None:
            problems.append(f"{r['id']}: in odds, no history row")
        elif r["newest_ts"] != r["source_ts"] or r["kind"] is None:
            problems.append(
                f"{r['id']}: odds {r['status']} at {r['source_ts']}, newest history at "
                f"{r['newest_ts']} has no {r['status']} row"
            )
        elif r["status"] != "settled" and r["h_price"] is not None and r["h_price"] != r["price"]:
            problems.append(f"{r['id']}: odds price {r['price']}, newest history {r['h_price']}")
    twice = await pg.fetch(
        """
        SELECT id, source_ts, kind, count(*) AS n FROM odds_history
        WHERE event_id NOT IN ('snapshot', 'repair')
        GROUP BY id, source_ts, kind, entry_id HAVING count(*) > 1
        UNION ALL
        SELECT id, source_ts, kind, count(*) FROM odds_history
        GROUP BY id, source_ts, kind
        HAVING count(*) > 1 AND bool_or(event_id IN ('snapshot', 'repair'))
        """
    )
    problems += [f"{r['id']} {r['kind']} at {r['source_ts']}: {r['n']} rows" for r in twice]
    return problems[:20]


async def missing_changes(pg: Any, world: World, *, since: int = 0) -> list[str]:
    """Changes the feed sent (from log position ``since`` on) of odds the database holds that
    history lacks: by entry id for streamed rows, by odd, time and kind for rows made from
    REST (a repair's). Not counted, as the README's "What does not hold" says: the changes of
    an odd posted and suspended inside a gap (no snapshot returns a suspended odd and the
    database never held it, so nothing can ask for its history), up to the gap's end."""
    held = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    rows = await pg.fetch("SELECT id, entry_id, kind, source_ts FROM odds_history")
    by_entry = {(r["id"], r["entry_id"], r["kind"]) for r in rows if r["entry_id"]}
    by_time = {(r["id"], r["source_ts"], r["kind"]) for r in rows}
    earliest: dict[str, datetime] = {}
    for r in rows:
        if r["id"] not in earliest or r["source_ts"] < earliest[r["id"]]:
            earliest[r["id"]] = r["source_ts"]
    unseen = _posted_and_suspended_in_gaps(
        world, await pg.fetch("SELECT from_ts, until_ts FROM stream_gaps"), earliest
    )
    missing = []
    for e in world.log[since:]:
        if e.event not in KINDS:
            continue
        for item in orjson.loads(e.data)["data"]:
            if item["id"] not in held or entry_ms(e.entry_id) <= unseen.get(item["id"], -1):
                continue
            kind = KINDS[e.event]
            at = datetime.fromtimestamp(item["timestamp"], UTC)
            if (item["id"], e.entry_id, kind) not in by_entry and (
                item["id"],
                at,
                kind,
            ) not in by_time:
                missing.append(f"{item['id']} {kind} {e.entry_id}")
    return missing


def entry_ms(entry_id: str) -> int:
    """The milliseconds of an entry id (the simulator's clock)."""
    return parse_entry_id(entry_id)[0]


def _posted_and_suspended_in_gaps(
    world: World, gaps: list[Any], earliest: dict[str, datetime]
) -> dict[str, int]:
    """Odd id -> the time (ms) up to which the database could not know it: the end of the
    last gap of a run of gaps that each held the odd's changes and ended with it locked, from
    its first change on, when history has nothing of it before that end (no snapshot returns
    a locked odd, and the stream was not there)."""
    spans = [(g["from_ts"].timestamp() * 1000, g["until_ts"].timestamp() * 1000) for g in gaps]
    changes: dict[str, list[tuple[int, str]]] = {}
    for e in world.log:
        if e.event not in KINDS:
            continue
        ms = entry_ms(e.entry_id)
        for item in orjson.loads(e.data)["data"]:
            changes.setdefault(item["id"], []).append((ms, KINDS[e.event]))
    out = {}
    for odd, seen in changes.items():
        known = earliest.get(odd)
        until = unknowable_until(seen, spans, known.timestamp() * 1000 if known else INF)
        if until is not None:
            out[odd] = int(until)
    return out


INF = float("inf")


def _end(span: tuple[float, float]) -> float:
    return span[1]


def unknowable_until(
    changes: list[tuple[int, str]], spans: list[tuple[float, float]], known_ms: float
) -> float | None:
    """The end of the run of gaps (``spans``, ms) that an odd's first changes (ms, kind; in
    order) fall in, each ending with the odd locked and before history first knows it
    (``known_ms``); None when its first change is outside every gap or the first gap does not
    end so. An odd posted and suspended in a gap, then re-opened and suspended again inside
    a later gap, stays unknown across both: only a snapshot that sees it open, or the stream,
    can tell the database of it."""
    until: float | None = None
    gap: tuple[float, float] | None = None
    last = ""
    for ms, kind in changes:
        if gap is not None and ms <= gap[1]:
            last = kind
            continue
        if gap is not None:  # the odd's changes left the gap: how did it end?
            if last != "locked" or gap[1] >= known_ms:
                return until
            until = gap[1]
        # Of the gaps around it, the first to end: the first snapshot that could see it.
        gap = min(((lo, hi) for lo, hi in spans if lo <= ms <= hi), key=_end, default=None)
        if gap is None:  # the stream was there: the database knows it from here
            return until
        last = kind
    if gap is not None and last == "locked" and gap[1] < known_ms:
        until = gap[1]
    return until


async def ledger_quiet(pg: Any, quiet_s: float) -> bool:
    """Every gap closed, and none recorded for ``quiet_s`` seconds: a check made while the
    daemon still reconnects would read changes as missing that a later repair adds."""
    left, since = await pg.fetchrow(
        "SELECT count(*) FILTER (WHERE state IN ('open', 'repairing')),"
        " coalesce(extract(epoch FROM now() - max(opened_at)), 'Infinity')::float8"
        " FROM stream_gaps"
    )
    return bool(left == 0 and since >= quiet_s)


async def history_holds(
    pg: Any,
    sim: RunningSim,
    *,
    since: int | None = None,
    timeout_s: float = 120,
    quiet_s: float = 0,
) -> None:
    """How every fault test ends: once the gaps are repaired (and, with ``quiet_s``, none
    opened for that long), no change the feed sent (from log position ``since`` on) of an odd
    the database holds is missing from history, none is stored twice, and every ``odds`` row
    is explained by its newest history row."""
    from tests.conftest import wait_until

    await wait_until(lambda: ledger_quiet(pg, quiet_s), timeout_s=timeout_s, interval_s=0.2)
    twice = await history_diff(pg, sim.server.world)
    assert twice == [], twice
    if since is not None:
        missing = await missing_changes(pg, sim.server.world, since=since)
        if missing:
            gaps = await pg.fetch(
                "SELECT gap_id, cause, state, detail, from_ts, until_ts, odds_to_repair, "
                "changes_added FROM stream_gaps ORDER BY gap_id"
            )
            ledger = [tuple(g) for g in gaps]
            raise AssertionError(f"{len(missing)} changes missing: {missing[:10]}; gaps {ledger}")
    # Named here: pytest does not rewrite asserts in tests/support, so a bare comparison
    # would fail without saying which odd.
    problems = await history_invariants(pg)
    assert problems == [], problems
