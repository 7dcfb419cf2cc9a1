"""The simulator's HTTP side: the vendor's SSE streams and REST endpoints over a ``World``."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ingestor.domain.errors import EntryIdError
from ingestor.domain.events import parse_entry_id
from ingestor.simulator.world import COPILOT, REGULAR, LogEntry, World

MAX_FIXTURE_IDS = 5
MAX_SPORTSBOOKS = 5
PAGE_SIZE = 10
# The vendor's historical odds endpoint: at most 10 ids a call, 10 calls per fixed 15 s window.
HISTORICAL_IDS = 10
HISTORICAL_CALLS = 10
WINDOW_S = 15.0


@dataclass
class Faults:
    """Knobs a test (or ``ingestor simulate``) turns while the server runs."""

    honour_last_entry_id: bool = True
    ping_interval_s: float = 5.0
    retry_ms: int = 5000
    duplicate_rate: float = 0.0  # send an event twice
    reorder_rate: float = 0.0  # hold an event back and send it after the next one
    stall: bool = False  # send nothing at all, keep the connection open
    api_key: str | None = None  # None: any key (or none) is accepted
    rest_fail_paths: set[str] = field(default_factory=set)  # answer these REST paths with 503
    rest_delay_s: float = 0.0  # a slow REST API: every answer waits this long
    cut_every_events: int = 0  # end every stream after this many events (0: never)
    historical_calls_per_window: int = HISTORICAL_CALLS  # beyond: 429


@dataclass
class Connection:
    """One open stream, as the server sees it."""

    group: tuple[str, str, tuple[str, ...], tuple[str, ...]]
    last_entry_id: str | None
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    cut_mid_frame: bool = True
    sent: int = 0
    transport: Any = None

    def alive(self) -> bool:
        """False as soon as the client closed its side (a killed process included)."""
        return self.transport is not None and not self.transport.is_closing()


class SimServer:
    """aiohttp application over a world; ``emit`` moves the world and wakes the streams."""

    def __init__(self, world: World, faults: Faults | None = None) -> None:
        self.world = world
        self.faults = faults or Faults()
        self.open: list[Connection] = []
        self.connections_total = 0
        self.max_concurrent: Counter[tuple[Any, ...]] = Counter()
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []
        self.last_event_ids: list[str | None] = []  # Last-Event-ID header of each stream
        self.historical_calls = 0  # answered with 200
        self.historical_at: list[float] = []  # when each was answered (loop time)
        self.historical_refused = 0  # answered with 429
        self._window: tuple[float, int] = (0.0, 0)  # (window start, calls in it)
        self._changed = asyncio.Condition()

    def app(self) -> web.Application:
        """Routes below ``/api/v3``."""
        app = web.Application()
        r = app.router
        r.add_get("/api/v3/stream/copilot/{sport}/odds", self._copilot_stream)
        r.add_get("/api/v3/stream/odds/{sport}", self._regular_stream)
        r.add_get("/api/v3/copilot/fixtures", self._fixtures)
        r.add_get("/api/v3/fixtures/active", self._fixtures)
        r.add_get("/api/v3/copilot/fixtures/odds", self._copilot_odds)
        r.add_get("/api/v3/fixtures/odds", self._regular_odds)
        r.add_get("/api/v3/copilot/fixtures/odds/historical", self._historical)
        return app

    async def emit(self, n: int) -> None:
        """Move the world ``n`` events and wake every stream."""
        self.world.emit(n)
        async with self._changed:
            self._changed.notify_all()

    def cut_all(self, *, mid_frame: bool = True) -> int:
        """Abort every open stream (by default in the middle of a frame); returns how many."""
        for conn in self.open:
            conn.cut_mid_frame = mid_frame
            conn.cut.set()
        return len(self.open)

    # --- auth and parameters -----------------------------------------------------------------

    def _check_key(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, list(request.query.items())))
        if request.path in self.faults.rest_fail_paths:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        key = request.headers.get("X-Api-Key") or request.query.get("key")
        if self.faults.api_key is None:
            return None
        if not key:
            return web.json_response({"error": "API key is required"}, status=401)
        if key != self.faults.api_key:
            return web.json_response({"error": "Invalid or inactive API key"}, status=401)
        return None

    # --- streams -------------------------------------------------------------------------------

    async def _copilot_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, COPILOT)

    async def _regular_stream(self, request: web.Request) -> web.StreamResponse:
        books = request.query.getall("sportsbook", [])
        if not books or len(books) > MAX_SPORTSBOOKS:
            return web.Response(status=400, text="sportsbook is required (1 to 5)")
        return await self._stream(request, REGULAR)

    def _start_index(self, last_entry_id: str | None) -> int:
        log = self.world.log
        if not (last_entry_id and self.faults.honour_last_entry_id):
            return len(log)  # "now": no replay
        try:
            key = parse_entry_id(last_entry_id)
        except EntryIdError:
            return len(log)  # the vendor accepts a bogus id silently
        return bisect.bisect_right([e.key for e in log], key)

    async def _stream(self, request: web.Request, stream: str) -> web.StreamResponse:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        q = request.query
        group = (
            stream,
            request.match_info["sport"],
            tuple(sorted(q.getall("league", []))),
            tuple(sorted(q.getall("sportsbook", []))),
        )
        # The vendor's cursor is last_entry_id; EventSource clients send Last-Event-ID.
        header_id = request.headers.get("Last-Event-ID")
        self.last_event_ids.append(header_id)
        conn = Connection(group, q.get("last_entry_id") or header_id, transport=request.transport)
        fixture_updates = q.get("include_fixture_updates") == "true"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        # Where the stream starts is decided before the connection counts as open: an event
        # emitted once it is open is sent on it.
        start = self._start_index(conn.last_entry_id)
        self.open.append(conn)
        self.connections_total += 1
        # Counted by transport state, not by handler: a handler learns of a dead client only
        # when it next writes, the transport as soon as the peer closes.
        live = sum(1 for c in self.open if c.group == group and c.alive())
        self.max_concurrent[group] = max(self.max_concurrent[group], live)
        try:
            await resp.write(_frame("connected", b"ok go", None, self.faults.retry_ms))
            await self._pump(request, resp, conn, start, fixture_updates)
        except ConnectionResetError:
            pass  # the client went away: nothing to finish
        finally:
            self.open.remove(conn)
        return resp

    def _wanted(self, e: LogEntry, conn: Connection, fixture_updates: bool) -> bool:
        stream, sport, leagues, books = conn.group
        if e.sport != sport or (leagues and e.league not in leagues):
            return False
        if e.stream is None:
            return fixture_updates
        return e.stream == stream and (stream == COPILOT or e.sportsbook in books)

    async def _pump(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        conn: Connection,
        index: int,
        fixture_updates: bool,
    ) -> None:
        rng = self.world.rng
        held: LogEntry | None = None
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.faults.ping_interval_s
        while not conn.cut.is_set():
            if index >= len(self.world.log) or self.faults.stall:
                await self._wait(conn, max(0.0, next_ping - loop.time()))
            if self.faults.stall:
                continue
            if loop.time() >= next_ping:
                await resp.write(_frame("ping", b"now", None, self.faults.retry_ms))
                next_ping = loop.time() + self.faults.ping_interval_s
            while index < len(self.world.log) and not conn.cut.is_set():
                e = self.world.log[index]
                index += 1
                if not self._wanted(e, conn, fixture_updates):
                    continue
                if held is None and rng.random() < self.faults.reorder_rate:
                    held = e
                    continue
                for out in [e, held] if held else [e]:
                    await self._send(resp, out, conn)
                    if rng.random() < self.faults.duplicate_rate:
                        await self._send(resp, out, conn)
                held = None
            if held is not None and not conn.cut.is_set():
                await self._send(resp, held, conn)  # reordered, never withheld
                held = None
        if conn.cut_mid_frame and request.transport is not None:
            # Half an event, then the connection dies: the client must not apply it.
            await resp.write(b'event: copilot-odds\nid: 9999999999999-0\ndata: {"entry_id"')
            request.transport.abort()

    async def _send(self, resp: web.StreamResponse, e: LogEntry, conn: Connection) -> None:
        await resp.write(_frame(e.event, e.data, e.entry_id, self.faults.retry_ms))
        conn.sent += 1
        every = self.faults.cut_every_events
        if every and conn.sent >= every:
            conn.cut.set()  # the vendor drops the connection

    async def _wait(self, conn: Connection, timeout_s: float) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        if conn.cut.is_set():
            return

    # --- REST ----------------------------------------------------------------------------------

    async def _slow(self) -> None:
        if self.faults.rest_delay_s > 0:
            await asyncio.sleep(self.faults.rest_delay_s)  # the fault itself, not a wait

    async def _fixtures(self, request: web.Request) -> web.Response:
        await self._slow()
        denied = self._check_key(request)
        if denied is not None:
            return denied
        q = request.query
        leagues = set(q.getall("league", []))
        ids = set(q.getall("id", []))
        sport = q.get("sport")
        items = [
            f.rest()
            for f in self.world.fixtures
            if (not leagues or f.league in leagues)
            and (not sport or f.sport == sport)
            and (not ids or f.id in ids)
        ]
        page = int(q.get("page", "1"))
        total = max(1, -(-len(items) // PAGE_SIZE))
        chunk = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return web.json_response({"data": chunk, "page": page, "total_pages": total})

    def _odds_answer(self, request: web.Request, stream: str, books: list[str]) -> web.Response:
        q = request.query
        ids = q.getall("fixture_id", [])
        if not ids or len(ids) > MAX_FIXTURE_IDS:
            return web.json_response(
                {"error": f"fixture_id: 1 to {MAX_FIXTURE_IDS} required"}, status=400
            )
        settled = q.get("settled") == "true"
        markets = set(q.getall("market", []))
        data = []
        for fid in ids:
            f = self.world.fixture(fid)
            if f is None:
                continue
            odds = [
                o.item("rest")
                for o in f.odds
                if o.stream == stream
                and (not books or o.sportsbook in books)
                and (not markets or o.market in markets)
                and o.status == ("settled" if settled else "open")
            ]
            data.append({**f.rest(), "odds": odds})
        return web.json_response({"data": data})

    async def _historical(self, request: web.Request) -> web.Response:
        """Each odd's full history, newest first, with the vendor's limits."""
        await self._slow()
        denied = self._check_key(request)
        if denied is not None:
            return denied
        ids = request.query.getall("id", [])
        if not ids or len(ids) > HISTORICAL_IDS:
            return web.json_response({"error": f"id: 1 to {HISTORICAL_IDS} required"}, status=400)
        now = asyncio.get_running_loop().time()
        start, calls = self._window
        if now - start >= WINDOW_S:
            start, calls = now - (now - start) % WINDOW_S if start else now, 0
        if calls >= self.faults.historical_calls_per_window:
            self.historical_refused += 1
            return web.json_response({"error": "Rate limit exceeded"}, status=429)
        self._window = (start, calls + 1)
        self.historical_calls += 1
        self.historical_at.append(now)
        odds = {o.id: o for o in self.world.odds(COPILOT) if o.id in ids}
        data = [
            {"id": uid, "entries": list(reversed(odds[uid].history))} for uid in ids if uid in odds
        ]
        return web.json_response({"data": data})

    async def _copilot_odds(self, request: web.Request) -> web.Response:
        await self._slow()
        return self._check_key(request) or self._odds_answer(request, COPILOT, [])

    async def _regular_odds(self, request: web.Request) -> web.Response:
        await self._slow()
        books = request.query.getall("sportsbook", [])
        if not books:
            return web.json_response({"error": "sportsbook is required"}, status=400)
        return self._check_key(request) or self._odds_answer(request, REGULAR, books)


def _frame(event: str, data: bytes, entry_id: str | None, retry_ms: int) -> bytes:
    head = f"event: {event}\n" + (f"id: {entry_id}\n" if entry_id else "") + f"retry: {retry_ms}\n"
    return head.encode() + b"data: " + data + b"\n\n"
