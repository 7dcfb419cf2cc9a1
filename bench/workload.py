"""The benchmark's workload, shaped like production: fixtures of up to 200 odds in several
leagues, split into connection groups, each group with its own stream of pre-encoded events and
the REST snapshot of its fixtures as they stood before the stream's first event.

The mix, by odd: about 80% updates of odds already on the board (price, and for player props
at times the line), 10-20% locks (the last price carried), a few settlements; a finished
fixture is settled odd by odd and replaced by a new one, whose odds are then listed (new odds).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from ingestor.config import StreamConfig
from ingestor.domain.groups import group_key as daemon_group_key
from ingestor.simulator.world import as_sent

SPORT = "basketball"
LEAGUES = ("NBA", "NCAAB", "WNBA", "EuroLeague", "NBL", "CBA", "ACB", "LNB")
FIXTURES = 100
ODDS_PER_FIXTURE = (40, 200)
ODDS_PER_EVENT = (1, 8)
LOCK_SHARE = 0.15  # of events
SETTLE_SHARE = 0.02  # of events
LIVE_SHARE = 0.3  # of fixtures at the start
LINE_MOVE_SHARE = 0.3  # of updates to an odd whose id does not carry its line
START_LOCKED, START_SETTLED = 0.10, 0.03  # of odds at the start
SETTLEMENTS = ("Won", "Lost", "Refunded", "Half Won", "Half Lost")
CITIES = (
    "Boston",
    "Miami",
    "Denver",
    "Dallas",
    "Chicago",
    "Phoenix",
    "Utah",
    "Memphis",
    "Atlanta",
    "Orlando",
    "Detroit",
    "Houston",
    "Toronto",
    "Portland",
    "Sacramento",
    "Milwaukee",
)
NAMES = (
    "Heat",
    "Hawks",
    "Bulls",
    "Suns",
    "Kings",
    "Jazz",
    "Magic",
    "Nets",
    "Bucks",
    "Stars",
    "Lions",
    "Rockets",
    "Pistons",
    "Raptors",
    "Blazers",
    "Grizzlies",
)
FIRST = ("James", "Luka", "Jalen", "Tyrese", "Devin", "Jaylen", "Bam", "Trae", "Zion", "Jamal")
LAST = (
    "Smith",
    "Brown",
    "Green",
    "Young",
    "Walker",
    "Murray",
    "Adebayo",
    "Booker",
    "Porter",
    "Allen",
    "Harris",
    "Lowry",
)
PLAYER_MARKETS = ("Player Points", "Player Rebounds", "Player Assists", "Player Threes")


def slug(text: str) -> str:
    """The vendor's id style: lower case, runs of other characters as one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def group_key(leagues: tuple[str, ...]) -> str:
    """The daemon's own key for a copilot group of these leagues (its cursor row's)."""
    return daemon_group_key(
        StreamConfig(kind="copilot", sport=SPORT, leagues=list(leagues)), leagues
    )


@dataclass(slots=True)
class Odd:
    """One odd's current state: the fields the vendor sends, and where it stands."""

    item: dict[str, Any]
    status: str  # new (not listed yet), open, locked, settled
    line_in_id: bool  # False: the line (points) may move under the same id
    settlement: dict[str, str] | None = None


@dataclass(slots=True)
class Fixture:
    """A game: its REST listing, its odds on the board and those not listed yet."""

    rest: dict[str, Any]
    board: list[Odd] = field(default_factory=list)  # open or locked
    new: list[Odd] = field(default_factory=list)
    settled: list[Odd] = field(default_factory=list)


@dataclass
class GroupStream:
    """One connection group: its leagues and its own pre-encoded stream."""

    key: str
    leagues: tuple[str, ...]
    frames: list[bytes] = field(default_factory=list)
    odds: list[int] = field(default_factory=list)  # odds carried by each frame
    entry_ids: list[str] = field(default_factory=list)
    total_odds: int = 0


@dataclass
class Workload:
    """Every group's stream, the REST snapshot of the start, and what the odds were."""

    groups: list[GroupStream]
    leagues_per_connection: int
    fixtures: dict[str, list[dict[str, Any]]]  # REST listing items by league
    snapshot: dict[str, tuple[bytes, bytes]]  # fixture id: encoded (open odds, settled odds)
    snapshot_rows: int = 0  # odds the REST snapshot returns (open and settled)
    mix: Counter[str] = field(default_factory=Counter)  # streamed odds by what they did

    @property
    def total_odds(self) -> int:
        """Streamed odds over every group."""
        return sum(g.total_odds for g in self.groups)

    @property
    def total_frames(self) -> int:
        """Streamed events over every group."""
        return sum(len(g.frames) for g in self.groups)

    @property
    def leagues(self) -> list[str]:
        """Every league, group after group (the daemon's configuration order)."""
        return [lg for g in self.groups for lg in g.leagues]

    def describe(self) -> dict[str, Any]:
        """The workload's shape, for the report."""
        total = sum(self.mix.values()) or 1
        shares = {f"share_{k}": round(v / total, 3) for k, v in sorted(self.mix.items())}
        return {
            "groups": len(self.groups),
            "leagues": len(self.leagues),
            "fixtures_at_start": len(self.snapshot),
            "odds": self.total_odds,
            "events": self.total_frames,
            "snapshot_odds": self.snapshot_rows,
            **shares,
        }


def _price(rng: random.Random, around: float | None = None) -> int:
    """American odds (-250..-100 or 100..250), a small move from ``around`` if given."""
    if around is None:
        return rng.choice((-1, 1)) * rng.randint(100, 250)
    delta = rng.choice((-15, -5, 5, 15))
    p = int(around) + delta
    if -100 < p < 100:  # through even money: -95 is +105, 95 is -105
        p = p + 200 if delta > 0 else p - 200
    return max(-250, min(250, p))


class _World:
    """One group's fixtures and the events that move them."""

    def __init__(
        self, rng: random.Random, gi: int, leagues: tuple[str, ...], fixtures: int, start_ms: int
    ) -> None:
        self.rng, self.gi, self.leagues, self.start_ms = rng, gi, leagues, start_ms
        self.serial = 0
        self.fixtures = [self._fixture(leagues[i % len(leagues)], True) for i in range(fixtures)]

    def _fixture(self, league: str, at_start: bool) -> Fixture:
        rng = self.rng
        self.serial += 1
        fid = f"{self.gi:02X}{self.serial:04X}{rng.getrandbits(24):06X}"
        home, away = (f"{rng.choice(CITIES)} {n}" for n in rng.sample(NAMES, 2))
        start = datetime.fromtimestamp(self.start_ms / 1000, UTC).replace(microsecond=0)
        live = at_start and rng.random() < LIVE_SHARE
        start += timedelta(hours=-1 if live else rng.randint(1, 48))
        rest = {
            "id": fid,
            "game_id": f"{rng.randint(10000, 99999)}-{rng.randint(10000, 99999)}-"
            f"{start.date().isoformat()}",
            "start_date": start.isoformat(),
            "home_team_display": home,
            "away_team_display": away,
            "status": "live" if live else "unplayed",
            "sport": {"id": SPORT, "name": SPORT},
            "league": {"id": slug(league), "name": league},
        }
        f = Fixture(rest)
        base = {
            "fixture_id": fid,
            "game_id": rest["game_id"],
            "is_live": live,
            "league": league,
            "sport": SPORT,
            "version_id": -1,
        }
        for odd in self._lines(f, base, home, away):
            if not at_start:
                f.new.append(odd)
                continue
            odd.item["timestamp"] = (self.start_ms - rng.randint(1_000, 3_600_000)) / 1000
            roll = rng.random()
            if roll < START_SETTLED:
                self._settle(odd, odd.item["timestamp"])
                f.settled.append(odd)
            else:
                odd.status = "locked" if roll < START_SETTLED + START_LOCKED else "open"
                f.board.append(odd)
        return f

    def _lines(self, f: Fixture, base: dict[str, Any], home: str, away: str) -> list[Odd]:
        rng = self.rng
        specs = _specs(
            rng, {home: f"{rng.getrandbits(48):012X}", away: f"{rng.getrandbits(48):012X}"}
        )
        n = min(rng.randint(*ODDS_PER_FIXTURE), len(specs))
        out: dict[str, Odd] = {}
        for sp in specs[:2] + rng.sample(specs[2:], n - 2):  # the moneyline always
            tail = f"{slug(sp.market)}:{slug(sp.name)}"
            fid = f.rest["id"]
            item = {
                **base,
                "id": f"1:-1:{fid}:{tail}",
                "odd_id": f"{fid}:{tail}",
                "market": sp.market,
                "name": sp.name,
                "selection": sp.selection,
                "selection_line": sp.side,
                "player_id": sp.player_id,
                "team_id": sp.team_id,
                "is_main": sp.main,
                "points": sp.points,
                "price": _price(rng),
            }
            if not sp.line_in_id:
                item["name"] = f"{sp.name} {sp.points}"
            item["grouping_key"] = _grouping(item)
            out.setdefault(item["id"], Odd(item, "new", sp.line_in_id))  # players share names
        return list(out.values())

    def _settle(self, odd: Odd, ts: float) -> None:
        odd.status = "settled"
        settled_at = datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat()
        odd.settlement = {"settlement": self.rng.choice(SETTLEMENTS), "settled_at": settled_at}

    def step(self, ts: float, mix: Counter[str]) -> tuple[str, list[dict[str, Any]]]:
        """One event: its type and the odds it carries (empty: nothing to send this time)."""
        rng = self.rng
        roll = rng.random()
        k = rng.randint(*ODDS_PER_EVENT)
        if roll < SETTLE_SHARE:
            return "copilot-settled-odds", self._settle_some(k, ts, mix)
        f = rng.choice(self.fixtures[1:])  # the first fixture is the one finishing
        if roll < SETTLE_SHARE + LOCK_SHARE:
            picked = [o for o in rng.sample(f.board, min(k, len(f.board))) if o.status == "open"]
            for o in picked:
                o.status = "locked"
                o.item["timestamp"] = ts
            mix["lock"] += len(picked)
            return "copilot-locked-odds", [o.item for o in picked]
        if f.new:  # a new fixture's odds are listed first
            picked = [f.new.pop() for _ in range(min(k, len(f.new)))]
            f.board += picked
            mix["new"] += len(picked)
        else:
            picked = rng.sample(f.board, min(k, len(f.board)))
            mix["update"] += len(picked)
        for o in picked:
            self._move(o, ts)
        return "copilot-odds", [o.item for o in picked]

    def _move(self, o: Odd, ts: float) -> None:
        item = o.item
        item["timestamp"] = ts
        if o.status != "new" and not o.line_in_id and self.rng.random() < LINE_MOVE_SHARE:
            item["points"] += self.rng.choice((-1.0, 1.0))
            item["name"] = f"{item['name'].rsplit(' ', 1)[0]} {item['points']}"
            item["grouping_key"] = _grouping(item)
        item["price"] = _price(self.rng, item["price"] if o.status != "new" else None)
        o.status = "open"

    def _settle_some(self, k: int, ts: float, mix: Counter[str]) -> list[dict[str, Any]]:
        f = self.fixtures[0]
        f.new.clear()  # never listed: nothing to settle
        picked = [f.board.pop() for _ in range(min(k, len(f.board)))]
        for o in picked:
            o.item["timestamp"] = ts
            self._settle(o, ts)
        mix["settle"] += len(picked)
        if not f.board:  # finished and settled: a new game takes its place
            self.fixtures.pop(0)
            self.fixtures.append(self._fixture(f.rest["league"]["name"], False))
        return [_settled_item(o) for o in picked]


class _Spec(NamedTuple):
    market: str
    name: str
    selection: str
    side: str  # selection_line
    points: float | None
    main: bool
    player_id: str
    team_id: str
    line_in_id: bool


def _specs(rng: random.Random, teams: dict[str, str]) -> list[_Spec]:
    """Every line a fixture may offer (about 220), the two moneyline odds first."""
    (home, home_id), (away, away_id) = teams.items()
    out = [_Spec("Moneyline", t, t, "", None, True, "", tid, True) for t, tid in teams.items()]
    spread, total = rng.choice((5.5, 6.5, 7.5, 8.5)), rng.choice((210.5, 220.5, 230.5))
    for market, main, step, n in (
        ("Point Spread", spread, 1.0, 5),
        ("1st Half Point Spread", spread / 2, 0.5, 3),
    ):
        for k in range(-n, n + 1):
            s = main + k * step
            out.append(_Spec(market, f"{home} -{s}", home, "", -s, k == 0, "", home_id, True))
            out.append(_Spec(market, f"{away} +{s}", away, "", s, k == 0, "", away_id, True))
    sides = ("over", "under")
    for market, main, n in (("Total Points", total, 5), ("1st Half Total Points", total / 2, 3)):
        for k in range(-n, n + 1):
            t = main + 2 * k
            out += [
                _Spec(market, f"{x.title()} {t}", "", x, t, k == 0, "", "", True) for x in sides
            ]
    for team, tid in teams.items():
        for k in (-1, 0, 1):
            t = total / 2 + 3 * k
            out += [
                _Spec("Team Total", f"{team} {x.title()} {t}", team, x, t, k == 0, "", tid, True)
                for x in sides
            ]
        for _ in range(8):  # player props: the line moves under the same id
            player, pid = f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"{rng.getrandbits(48):012X}"
            for market in PLAYER_MARKETS:
                line = rng.randint(2, 30) + 0.5
                out += [
                    _Spec(market, f"{player} {x.title()}", player, x, line, True, pid, tid, False)
                    for x in sides
                ]
    return out


def _grouping(item: dict[str, Any]) -> str:
    if item["player_id"]:
        return f"{item['player_id']}:{item['points']}"
    if item["market"] == "Team Total":
        return f"{slug(item['selection'])}:{item['points']}"
    return "default" if item["points"] is None else f"default:{item['points']}"


_SETTLED_KEEP = (
    "fixture_id",
    "game_id",
    "id",
    "league",
    "market",
    "name",
    "odd_id",
    "player_id",
    "sport",
    "team_id",
    "timestamp",
    "version_id",
)


def _settled_item(o: Odd) -> dict[str, Any]:
    """As the vendor sends a settlement: no price, points, is_main, is_live, grouping_key."""
    assert o.settlement is not None
    return {**{k: o.item[k] for k in _SETTLED_KEEP}, **o.settlement}


def _frame(kind: str, entry: str, items: list[dict[str, Any]]) -> bytes:
    # The keys in the vendor's order: the decoder is tuned to it (ingestor/domain/fast.py).
    data = orjson.dumps({"entry_id": entry, "data": [as_sent(i) for i in items], "type": kind})
    return b"event: %s\nid: %s\nretry: 5000\ndata: %s\n\n" % (kind.encode(), entry.encode(), data)


def split_frame(frame: bytes) -> tuple[str, bytes]:
    """The event type and the data of a frame as ``_frame`` makes it."""
    head, _, data = frame.partition(b"\ndata: ")
    return head.split(b"\n", 1)[0].removeprefix(b"event: ").decode(), data.rstrip(b"\n")


def build(
    target_odds: int,
    seed: int = 1,
    groups: int = 3,
    leagues_per_connection: int = 2,
    fixtures: int = FIXTURES,
    start_ms: int | None = None,
) -> Workload:
    """``target_odds`` streamed odds over ``groups`` connections (each of
    ``leagues_per_connection`` leagues) about ``fixtures`` fixtures; deterministic per seed."""
    if groups * leagues_per_connection > len(LEAGUES):
        raise ValueError(f"at most {len(LEAGUES)} leagues: {groups} x {leagues_per_connection}")
    start = start_ms or int(time.time() * 1000)
    w = Workload([], leagues_per_connection, {}, {})
    for gi in range(groups):
        leagues = LEAGUES[gi * leagues_per_connection : (gi + 1) * leagues_per_connection]
        rng = random.Random(seed * 1000 + gi)
        world = _World(rng, gi, leagues, max(2, round(fixtures / groups)), start)
        for f in world.fixtures:
            fid = f.rest["id"]
            w.fixtures.setdefault(f.rest["league"]["name"], []).append(f.rest)
            live = [{**o.item} for o in f.board if o.status == "open"]
            done = [{**o.item, **(o.settlement or {})} for o in f.settled]
            w.snapshot_rows += len(live) + len(done)
            w.snapshot[fid] = (
                orjson.dumps({**f.rest, "odds": live}),
                orjson.dumps({**f.rest, "odds": done}),
            )
        g = GroupStream(group_key(leagues), leagues)
        w.groups.append(g)
        want = target_odds // groups + (target_odds % groups if gi == groups - 1 else 0)
        ms, seq = start, 0
        while g.total_odds < want:
            step = rng.choice((0, 1, 1, 2))
            ms, seq = ms + step, (seq + 1 if step == 0 else 0)
            kind, items = world.step(ms / 1000, w.mix)
            if not items:
                continue
            entry = f"{ms}-{seq}"
            g.frames.append(_frame(kind, entry, items))
            g.odds.append(len(items))
            g.entry_ids.append(entry)
            g.total_odds += len(items)
    return w
