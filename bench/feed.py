"""A lean SSE feed for benchmarks: pre-encoded copilot events, written as fast as read or paced.

It speaks just enough HTTP/1.1 for aiohttp and requests (one response, body until close), so
that the feed costs as little CPU as possible next to the daemon and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import orjson

KEY_SPACE = 200_000
MARKETS = ("moneyline", "point_spread", "total_points", "player_points", "team_total")


@dataclass
class Workload:
    """Pre-encoded frames, the odds each carries, and the entry id of each."""

    frames: list[bytes] = field(default_factory=list)
    odds: list[int] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    history_rows: int = 0

    @property
    def total_odds(self) -> int:
        """Odds in the whole workload."""
        return sum(self.odds)


def _odd(n: int, price: int, ts: float) -> dict[str, object]:
    fixture = f"{n // 40:012X}"
    market = MARKETS[n % len(MARKETS)]
    return {
        "fixture_id": fixture, "game_id": f"g-{fixture}", "grouping_key": f"default:{n % 9}.5",
        "id": f"1:-1:{fixture}:{market}:line_{n % 40}", "is_live": False, "is_main": n % 3 == 0,
        "league": "NBA", "market": market.replace("_", " ").title(), "name": f"Line {n % 40}",
        "odd_id": f"{fixture}:{market}:line_{n % 40}", "player_id": "", "points": (n % 9) + 0.5,
        "price": price, "selection": "", "selection_line": "over", "sport": "basketball",
        "team_id": "", "timestamp": ts, "version_id": -1,
    }  # fmt: skip


def build(target_odds: int, seed: int = 1, start_ms: int | None = None) -> Workload:
    """Copilot events of 1 to 8 odds: ~80% updates of a 200k key space, some locks/settles."""
    rng = random.Random(seed)
    w = Workload()
    ms = start_ms or int(time.time() * 1000)
    seen = 0
    while w.total_odds < target_odds:
        ms += 1
        k = rng.randint(1, 8)
        roll = rng.random()
        kind = "copilot-odds" if roll < 0.90 else "copilot-locked-odds" if roll < 0.98 else (
            "copilot-settled-odds")  # fmt: skip
        picks = [rng.randrange(seen) if seen and rng.random() < 0.8 else seen + i for i in range(k)]
        seen = max(seen, max(picks) + 1) if seen < KEY_SPACE else seen
        ids = list(dict.fromkeys(i % KEY_SPACE for i in picks))  # an odd once per event
        k = len(ids)
        items = [_odd(i, rng.randint(-300, 300), ms / 1000) for i in ids]
        if kind == "copilot-settled-odds":
            for item in items:
                for key in ("price", "points", "is_main", "is_live", "grouping_key"):
                    item.pop(key)
                item["settlement"] = "Won"
                item["settled_at"] = "2026-01-01T00:00:00+00:00"
        entry = f"{ms}-0"
        data = orjson.dumps({"entry_id": entry, "data": items, "type": kind})
        w.frames.append(b"event: " + kind.encode() + b"\nid: " + entry.encode() +
                        b"\nretry: 5000\ndata: " + data + b"\n\n")  # fmt: skip
        w.odds.append(k)
        w.entry_ids.append(entry)
    return w


class Feed:
    """Serves one workload per connection; ``rate`` odds/s paces it (0: as fast as read)."""

    def __init__(self, workload: Workload, rate: float = 0.0) -> None:
        self.workload = workload
        self.rate = rate
        self.written_at: list[float] = []  # wall time each frame went to the socket
        self.done = asyncio.Event()
        self.bytes = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Listen on loopback; returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if self.written_at:  # one pass per run: later connections only get pings
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            await self.done.wait()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Connection: close\r\n\r\nevent: connected\ndata: ok go\n\n")  # fmt: skip
        try:
            await (self._paced(writer) if self.rate else self._flat_out(writer))
            await self.done.wait()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the naive client is stopped by a signal in the middle of the stream
        finally:
            writer.close()

    async def _flat_out(self, writer: asyncio.StreamWriter) -> None:
        frames = self.workload.frames
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            chunk.append(frame)
            size += len(frame)
            if size >= 65536:
                await self._write(writer, chunk, size)
                chunk, size = [], 0
        if chunk:
            await self._write(writer, chunk, size)

    async def _write(self, writer: asyncio.StreamWriter, chunk: list[bytes], size: int) -> None:
        now = time.time()
        writer.write(b"".join(chunk))
        self.written_at.extend([now] * len(chunk))
        self.bytes += size
        await writer.drain()

    async def _paced(self, writer: asyncio.StreamWriter) -> None:
        start = time.time()
        sent_odds = 0
        frames, odds = self.workload.frames, self.workload.odds
        i = 0
        while i < len(frames):
            due = start + sent_odds / self.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            batch: list[bytes] = []
            size = 0
            # Everything due by now goes in one write (the feed ticks, as real feeds do).
            while i < len(frames) and start + sent_odds / self.rate <= time.time():
                batch.append(frames[i])
                size += len(frames[i])
                sent_odds += odds[i]
                i += 1
            if batch:
                await self._write(writer, batch, size)
