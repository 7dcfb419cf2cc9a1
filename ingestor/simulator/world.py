"""A seeded world of fixtures and odds that moves, and the log of events it emitted.

The world's own state is the truth (the ledger tests compare the database with): events are
emitted in order with increasing entry ids and timestamps, so applying them in order is the
true state.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

COPILOT = "copilot"
REGULAR = "odds"
EVENT_TYPES = {
    (COPILOT, "odds"): "copilot-odds",
    (COPILOT, "locked"): "copilot-locked-odds",
    (COPILOT, "settled"): "copilot-settled-odds",
    (REGULAR, "odds"): "odds",
    (REGULAR, "locked"): "locked-odds",
}
TEAMS = (
    "Hawks",
    "Celtics",
    "Nets",
    "Hornets",
    "Bulls",
    "Cavaliers",
    "Mavericks",
    "Nuggets",
    "Pistons",
    "Warriors",
    "Rockets",
    "Pacers",
    "Clippers",
    "Lakers",
    "Grizzlies",
    "Heat",
)


# The order the vendor sends an odd's keys in (its samples: sorted, a settlement's two after
# the timestamp). The decoder's struct lists its fields so (domain/fast.py: a key out of order
# costs a scan), so a feed made here in another order would measure a slower decoder than the
# vendor's feed meets.
KEY_ORDER = (
    "fixture_id",
    "game_id",
    "grouping_key",
    "id",
    "is_live",
    "is_main",
    "league",
    "market",
    "name",
    "odd_id",
    "player_id",
    "points",
    "price",
    "selection",
    "selection_line",
    "sport",
    "sportsbook",
    "team_id",
    "timestamp",
    "settlement",
    "settled_at",
    "version_id",
)
_RANK = {k: i for i, k in enumerate(KEY_ORDER)}


def as_sent(item: dict[str, Any]) -> dict[str, Any]:
    """The odd's keys in the vendor's order (keys it does not know last, as they were)."""
    return dict(sorted(item.items(), key=lambda kv: _RANK.get(kv[0], len(_RANK))))


def settlement(odd: SimOdd, home: int, away: int) -> str:
    """How a bet settles on the final score, as a bettor would have it: one side of a two-way
    market wins and the other loses, every line of a fixture agrees with its one score, a
    whole line landed on is refunded, half results only on quarter lines (x.25, x.75)."""
    f = odd.fixture
    if odd.market == "Moneyline":
        return "Won" if (home > away) == (odd.selection == f.home) else "Lost"
    if odd.market == "Point Spread":
        margin = home - away if odd.selection == f.home else away - home
        return _against(margin + (odd.points or 0.0))
    if odd.market == "Total Points":
        over = home + away - (odd.points or 0.0)
        return _against(over if odd.selection_line == "over" else -over)
    raise ValueError(f"no settlement rule for market {odd.market!r}")


def _against(edge: float) -> str:
    """A line's result from how far the score beat it: a quarter line is two half bets."""
    if edge == 0:
        return "Refunded"
    if abs(edge) == 0.25:
        return "Half Won" if edge > 0 else "Half Lost"
    return "Won" if edge > 0 else "Lost"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass
class SimFixture:
    """A game with a status and its odds on every stream."""

    id: str
    game_id: str
    sport: str
    league: str
    home: str
    away: str
    start_date: datetime
    status: str = "unplayed"
    odds: list[SimOdd] = field(default_factory=list)
    score: tuple[int, int] | None = None  # (home, away) once completed

    def rest(self) -> dict[str, Any]:
        """The fixture as REST listings show it."""
        return {
            "id": self.id,
            "game_id": self.game_id,
            "start_date": self.start_date.isoformat(),
            "home_team_display": self.home,
            "away_team_display": self.away,
            "status": self.status,
            "sport": {"id": self.sport, "name": self.sport},
            "league": {"id": _slug(self.league), "name": self.league},
        }


@dataclass
class SimOdd:
    """One odd's true current state."""

    id: str
    stream: str
    sportsbook: str | None
    fixture: SimFixture
    market: str
    name: str
    selection: str
    selection_line: str
    points: float | None
    price: float
    is_main: bool
    status: str = "open"
    settlement: str | None = None
    settled_at: str | None = None
    ts: float = 0.0
    # Every change, oldest first, as the vendor's historical endpoint gives it (newest first).
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, kind: str) -> None:
        """Remember this change (``kind``: odds, locked or settled) for the history."""
        event = EVENT_TYPES[(self.stream, kind)]
        self.history.append(
            {
                "timestamp": self.ts,
                "event": event,
                "price": self.price,
                "is_main": self.is_main,
                "settlement": self.settlement if kind == "settled" else None,
            }
        )

    def item(self, kind: str) -> dict[str, Any]:
        """The odd as a stream event (or, with ``kind='rest'``, a REST answer) carries it."""
        f = self.fixture
        out: dict[str, Any] = {
            "fixture_id": f.id,
            "game_id": f.game_id,
            "id": self.id,
            "league": f.league,
            "market": self.market,
            "name": self.name,
            "odd_id": self.id.split(":", 2)[-1] if self.stream == COPILOT else self.id,
            "player_id": "",
            "selection": self.selection,
            "sport": f.sport,
            "team_id": "",
            "timestamp": self.ts,
            "version_id": -1,
        }
        if self.sportsbook:
            out["sportsbook"] = self.sportsbook
        if kind != "settled":  # the vendor's settled events carry no price fields
            out.update(
                grouping_key=f"default:{self.points}" if self.points is not None else "default",
                is_live=f.status == "live",
                is_main=self.is_main,
                points=self.points,
                price=self.price,
                selection_line=self.selection_line,
            )
        if kind in ("settled", "rest") and self.settlement:
            out.update(settlement=self.settlement, settled_at=self.settled_at)
        return as_sent(out)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One emitted event; ``stream`` None means it goes to both kinds of stream."""

    entry_id: str
    key: tuple[int, int]
    event: str
    data: bytes
    sport: str
    league: str
    stream: str | None
    sportsbook: str | None


class World:
    """Fixtures per league, odds per fixture and stream; ``step`` moves it by one event."""

    def __init__(
        self,
        leagues: list[tuple[str, str]],
        *,
        seed: int = 1,
        fixtures_per_league: int = 3,
        sportsbooks: tuple[str, ...] = ("DraftKings",),
    ) -> None:
        self.rng = random.Random(seed)
        self.leagues = leagues
        self.sportsbooks = sportsbooks
        self.fixtures: list[SimFixture] = []
        self.log: list[LogEntry] = []
        self._last: tuple[int, int] = (0, 0)
        self._serial = 0
        for sport, league in leagues:
            for _ in range(fixtures_per_league):
                self._new_fixture(sport, league)

    # --- time and ids ------------------------------------------------------------------------

    def _next_key(self) -> tuple[int, int]:
        ms = max(int(time.time() * 1000), self._last[0])
        self._last = (ms, self._last[1] + 1) if ms == self._last[0] else (ms, 0)
        return self._last

    def _emit(
        self,
        event: str,
        payload: dict[str, Any],
        f: SimFixture,
        stream: str | None,
        book: str | None,
        key: tuple[int, int],
    ) -> None:
        entry_id = f"{key[0]}-{key[1]}"
        payload["entry_id"] = entry_id
        self.log.append(
            LogEntry(entry_id, key, event, orjson.dumps(payload), f.sport, f.league, stream, book)
        )

    # --- the world ---------------------------------------------------------------------------

    def _new_fixture(self, sport: str, league: str) -> SimFixture:
        self._serial += 1
        home, away = self.rng.sample(TEAMS, 2)
        fid = f"{self.rng.getrandbits(48):012X}"
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=self.rng.randint(1, 30))
        f = SimFixture(fid, f"{self._serial}-{fid[:5]}", sport, league, home, away, start)
        self.fixtures.append(f)
        for stream, book in [(COPILOT, None), *((REGULAR, b) for b in self.sportsbooks)]:
            f.odds += self._lines(f, stream, book)
        for stream, book in [(COPILOT, None), *((REGULAR, b) for b in self.sportsbooks)]:
            self._publish(
                f, [o for o in f.odds if o.stream == stream and o.sportsbook == book], "odds"
            )
        return f

    def _lines(self, f: SimFixture, stream: str, book: str | None) -> list[SimOdd]:
        prefix = f"1:-1:{f.id}" if stream == COPILOT else f"{_slug(book or '')}:{f.id}"
        spread = self.rng.choice((1.5, 2.5, 3.5, 4.5, 5.5, 6.5))
        total = self.rng.choice((210.5, 215.5, 220.5, 225.5))
        specs = [
            ("Moneyline", f.home, f.home, "", None, True),
            ("Moneyline", f.away, f.away, "", None, True),
            ("Point Spread", f"{f.home} -{spread}", f.home, "", -spread, True),
            ("Point Spread", f"{f.away} +{spread}", f.away, "", spread, True),
            ("Point Spread", f"{f.home} -{spread + 2}", f.home, "", -spread - 2, False),
            ("Total Points", f"Over {total}", "", "over", total, True),
            ("Total Points", f"Under {total}", "", "under", total, True),
            ("Total Points", f"Over {total + 5}", "", "over", total + 5, False),
        ]
        return [
            SimOdd(
                f"{prefix}:{_slug(m)}:{_slug(n)}",
                stream,
                book,
                f,
                m,
                n,
                sel,
                line,
                pts,
                self._price(),
                main,
            )
            for m, n, sel, line, pts, main in specs
        ]

    def _price(self) -> int:
        """American odds: at most -100 or at least +100."""
        p = self.rng.randint(-250, 250)
        return p if abs(p) >= 100 else (100 if p >= 0 else -100) + p

    def _publish(self, f: SimFixture, odds: list[SimOdd], kind: str) -> None:
        if not odds:
            return
        key = self._next_key()
        for o in odds:
            o.ts = key[0] / 1000
            o.record(kind)
        stream, book = odds[0].stream, odds[0].sportsbook
        event = EVENT_TYPES[(stream, kind)]
        self._emit(
            event, {"data": [o.item(kind) for o in odds], "type": event}, f, stream, book, key
        )

    def step(self) -> None:
        """One event: mostly price moves, some locks, status changes and settlements."""
        roll = self.rng.random()
        if roll < 0.04 and self._change_status():
            return
        if roll < 0.10 and self._settle():
            return
        if roll < 0.20 and self._lock():
            return
        self._move()

    def emit(self, n: int) -> None:
        """``n`` steps."""
        for _ in range(n):
            self.step()

    def _pick(self, status: str, kinds: tuple[str, ...] = ("unplayed", "live")) -> list[SimOdd]:
        fixtures = [f for f in self.fixtures if f.status in kinds]
        if not fixtures:
            return []
        f = self.rng.choice(fixtures)
        stream = self.rng.choice(sorted({(o.stream, o.sportsbook or "") for o in f.odds}))
        pool = [
            o for o in f.odds if (o.stream, o.sportsbook or "") == stream and o.status == status
        ]
        return self.rng.sample(pool, min(len(pool), self.rng.randint(1, 4)))

    def _move(self) -> None:
        odds = self._pick("open") or self._pick("locked")
        for o in odds:
            o.price = self._price()
            o.status = "open"
        if odds:
            self._publish(odds[0].fixture, odds, "odds")

    def _lock(self) -> bool:
        odds = self._pick("open")
        for o in odds:
            o.status = "locked"
        if odds:
            self._publish(odds[0].fixture, odds, "locked")
        return bool(odds)

    def _change_status(self) -> bool:
        f = self.rng.choice(self.fixtures)
        new = {"unplayed": "live", "live": "completed"}.get(f.status)
        if new is None:
            return False
        old, f.status = f.status, new
        if new == "completed":
            home = self.rng.randint(88, 132)
            away = self.rng.choice([p for p in range(88, 133) if p != home])  # no draw
            f.score = (home, away)
        key = self._next_key()
        body = {
            "fixture": {
                "id": f.id,
                "game_id": f.game_id,
                "home_team_display": f.home,
                "away_team_display": f.away,
                "start_date": f.start_date.isoformat(),
            },
            "fixture_id": f.id,
            "game_id": f.game_id,
            "league": f.league,
            "sport": f.sport,
            "new_start_date": None,
            "old_start_date": None,
            "new_status": new,
            "old_status": old,
            "timestamp": key[0] / 1000,
        }
        self._emit("fixture-status", {"data": body}, f, None, None, key)
        if new == "completed":
            for book in self.sportsbooks:  # the regular stream takes a finished game's odds down
                self._publish(
                    f, [o for o in f.odds if o.sportsbook == book and o.status == "open"], "locked"
                )
                for o in f.odds:
                    if o.sportsbook == book:
                        o.status = "locked"
        return True

    def _settle(self) -> bool:
        done = [
            f
            for f in self.fixtures
            if f.status == "completed"
            and any(o.stream == COPILOT and o.status != "settled" for o in f.odds)
        ]
        if not done:
            return False
        f = self.rng.choice(done)
        todo = [o for o in f.odds if o.stream == COPILOT and o.status != "settled"]
        batch = todo[: self.rng.randint(1, 8)]
        assert f.score is not None  # completed fixtures have their final score
        for o in batch:
            o.status = "settled"
            o.settlement = settlement(o, *f.score)
            o.settled_at = datetime.now(UTC).replace(microsecond=0).isoformat()
        self._publish(f, batch, "settled")
        if len(batch) == len(todo):
            self._new_fixture(f.sport, f.league)  # keep the board busy
        return True

    # --- what tests and the REST endpoints read -----------------------------------------------

    def odds(self, stream: str) -> list[SimOdd]:
        """Every odd of one kind of stream."""
        return [o for f in self.fixtures for o in f.odds if o.stream == stream]

    def fixture(self, fixture_id: str) -> SimFixture | None:
        """A fixture by id."""
        return next((f for f in self.fixtures if f.id == fixture_id), None)
