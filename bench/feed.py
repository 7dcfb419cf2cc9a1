"""A lean local stand-in for the vendor: one SSE stream per connection group, and the two REST
endpoints re-hydration calls, answered from JSON encoded in advance.

It speaks just enough HTTP/1.1 for aiohttp and requests (keep-alive for REST answers with a
``Content-Length``; a stream is one response, its body until close), so that the feed costs
little CPU next to the daemon and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import orjson

from bench.workload import SPORT, GroupStream, Workload
from ingestor.domain.errors import EntryIdError
from ingestor.domain.events import parse_entry_id
from loopback.listening import stop_listening

API = "/api/v3"
STREAM_PATH = f"{API}/stream/copilot/{SPORT}/odds"
FIXTURES_PATH = f"{API}/copilot/fixtures"
ODDS_PATH = f"{API}/copilot/fixtures/odds"
PAGE_SIZE = 10  # fixtures per page, as the simulator pages them
MAX_FIXTURE_IDS = 5
PING_S = 5.0  # the vendor pings about every 5 s
CHUNK_BYTES = 65536
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
CONNECTED = b"event: connected\nretry: 5000\ndata: ok go\n\n"


def _answer(status: int, body: bytes, close: bool = False) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    extra = b"Connection: close\r\n" if close else b""
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
    return head % (status, reason, len(body), extra) + body


def _resume_at(group: GroupStream, last_entry_id: str) -> int:
    """Index of the first frame after ``last_entry_id`` (0 without one)."""
    if not last_entry_id:
        return 0
    try:
        after = parse_entry_id(last_entry_id)
    except EntryIdError:
        return 0  # the vendor accepts a bogus id silently
    return bisect.bisect_right([parse_entry_id(e) for e in group.entry_ids], after)


def _error(status: int, message: str) -> bytes:
    return _answer(status, orjson.dumps({"error": message}), close=True)


class Feed:
    """Serves each group its own stream, flat out or paced so that the groups together offer
    ``rate`` odds/s; a reconnect resumes after its ``last_entry_id`` (and supersedes the older
    connection); once a stream is sent, pings. Counts connections and REST requests."""

    def __init__(self, workload: Workload, rate: float = 0.0) -> None:
        self.workload = workload
        self.rate = rate
        self.groups = {tuple(sorted(g.leagues)): g for g in workload.groups}
        # Wall time each frame of a group went to the socket (last time, if sent again).
        self.written_at = {g.key: [0.0] * len(g.frames) for g in workload.groups}
        self.first_write = 0.0  # when the first frame of any group went out
        self.writing = asyncio.Event()  # set with the first frame
        self.connections: Counter[str] = Counter()  # stream connections by group key
        self.rest_requests: Counter[str] = Counter()  # by path
        self.done = asyncio.Event()
        self.bytes = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pages: dict[tuple[str, ...], list[bytes]] = {}

    async def start(self) -> int:
        """Listen on loopback; returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self.done.set()
        if self._server is not None:
            await stop_listening(self._server)  # a client may be connecting right now
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.done.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                url = urlsplit(head.split(b" ", 2)[1].decode())
                query = parse_qs(url.query)
                if url.path == STREAM_PATH:
                    await self._stream(writer, query)
                    return
                writer.write(self._rest(url.path, query))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away (the naive client is stopped mid-stream by a signal)
        finally:
            self._writers.discard(writer)
            writer.close()

    # --- streams ---------------------------------------------------------------------------

    async def _stream(self, writer: asyncio.StreamWriter, query: dict[str, list[str]]) -> None:
        group = self.groups.get(tuple(sorted(query.get("league", []))))
        if group is None:
            writer.write(_error(404, f"bench feed: no group of leagues {query.get('league')}"))
            return
        self.connections[group.key] += 1
        me = self.connections[group.key]  # a newer connection of the group supersedes this one
        writer.write(STREAM_HEAD + CONNECTED)
        # The vendor replays after last_entry_id (documented; the bench feed keeps the promise).
        start = _resume_at(group, (query.get("last_entry_id") or [""])[0])
        if self.rate:
            share = group.total_odds / self.workload.total_odds
            await self._paced(writer, group, start, self.rate * share, me)
        else:
            await self._flat_out(writer, group, start, me)
        while not self.done.is_set() and self.connections[group.key] == me:
            with contextlib.suppress(TimeoutError):  # idle, as the vendor: a ping every 5 s
                await asyncio.wait_for(self.done.wait(), PING_S)
                return
            writer.write(b"event: ping\nretry: 5000\ndata: %d\n\n" % int(time.time()))
            await writer.drain()

    async def _flat_out(
        self, writer: asyncio.StreamWriter, group: GroupStream, i: int, me: int
    ) -> None:
        frames = group.frames
        while i < len(frames) and self.connections[group.key] == me:
            first, size = i, 0
            while i < len(frames) and size < CHUNK_BYTES:
                size += len(frames[i])
                i += 1
            await self._write(writer, group, first, i)

    async def _paced(
        self, writer: asyncio.StreamWriter, group: GroupStream, i: int, rate: float, me: int
    ) -> None:
        start = time.time()
        sent_odds = 0
        odds = group.odds
        while i < len(odds) and self.connections[group.key] == me:
            delay = start + sent_odds / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # Everything due by now goes in one write (the feed ticks, as real feeds do).
            first = i
            while i < len(odds) and start + sent_odds / rate <= time.time():
                sent_odds += odds[i]
                i += 1
            if i > first:
                await self._write(writer, group, first, i)

    async def _write(
        self, writer: asyncio.StreamWriter, group: GroupStream, first: int, end: int
    ) -> None:
        now = time.time()
        self.first_write = self.first_write or now
        self.writing.set()
        data = b"".join(group.frames[first:end])
        writer.write(data)
        self.written_at[group.key][first:end] = [now] * (end - first)
        self.bytes += len(data)
        await writer.drain()

    # --- REST ------------------------------------------------------------------------------

    def _rest(self, path: str, query: dict[str, list[str]]) -> bytes:
        self.rest_requests[path] += 1
        if path == FIXTURES_PATH:
            body = self._fixtures(query)
        elif path == ODDS_PATH:
            ids = query.get("fixture_id", [])
            if not 1 <= len(ids) <= MAX_FIXTURE_IDS:
                return _error(400, f"fixture_id: 1 to {MAX_FIXTURE_IDS} required")
            body = self._odds(ids, query.get("settled") == ["true"])
        else:
            return _error(404, f"bench feed: no route {path}")
        return _answer(200, body)

    def _fixtures(self, query: dict[str, list[str]]) -> bytes:
        leagues = tuple(query.get("league", []))
        pages = self._pages.get(leagues)
        if pages is None:  # encoded once per league set
            items = [orjson.dumps(f) for lg in leagues for f in self.workload.fixtures.get(lg, [])]
            total = max(1, -(-len(items) // PAGE_SIZE))
            pages = self._pages[leagues] = [
                b'{"data":[%s],"page":%d,"total_pages":%d}'
                % (b",".join(items[p * PAGE_SIZE : (p + 1) * PAGE_SIZE]), p + 1, total)
                for p in range(total)
            ]
        page = int(query.get("page", ["1"])[0])
        if 1 <= page <= len(pages):
            return pages[page - 1]
        return b'{"data":[],"page":%d,"total_pages":%d}' % (page, len(pages))

    def _odds(self, ids: list[str], settled: bool) -> bytes:
        # The bench's daemon asks for every market: the answer is encoded ahead.
        parts = [self.workload.snapshot[f][settled] for f in ids if f in self.workload.snapshot]
        return b'{"data":[%s]}' % b",".join(parts)
