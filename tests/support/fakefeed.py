"""A local aiohttp server that plays the OpticOdds stream over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from loopback.listening import loopback_socket, stop_accepting

SEED_EVENTS = Path(__file__).parents[1] / "data" / "seed_events.txt"
API_KEY = "test-key-5f1e"


def frame(event: str, data: Any, *, id: str | None = None, retry_ms: int | None = 20) -> bytes:
    """One SSE frame as the vendor writes it (``retry:`` on every event)."""
    body = data if isinstance(data, str) else orjson.dumps(data).decode()
    lines = [f"event: {event}"]
    if id is not None:
        lines.append(f"id: {id}")
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    lines += [f"data: {line}" for line in body.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def odd(
    uid: str,
    *,
    price: float | str = -110,  # a str: a bad price, as a broken feed might send
    ts: float = 1_729_646_525,
    fixture_id: str = "FIX1",
    league: str = "NBA",
    **extra: Any,
) -> dict[str, Any]:
    """A copilot odd with the vendor's fields."""
    base: dict[str, Any] = {
        "fixture_id": fixture_id,
        "game_id": f"g-{fixture_id}",
        "grouping_key": "default",
        "id": uid,
        "is_live": False,
        "is_main": True,
        "league": league,
        "market": "Moneyline",
        "name": f"name {uid}",
        "odd_id": uid.split(":", 2)[-1],
        "player_id": "",
        "points": None,
        "price": price,
        "selection": "Team",
        "selection_line": "",
        "sport": "basketball",
        "team_id": "",
        "timestamp": ts,
        "version_id": -1,
    }
    base.update(extra)
    return base


# What the vendor's settled events leave out of an odd.
SETTLED_OMITS = ("price", "points", "is_main", "is_live", "grouping_key")


def settled_odd(
    uid: str,
    *,
    ts: float = 9,
    settlement: str = "Won",
    settled_at: str = "2026-01-01T00:00:00+00:00",
    omit: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A settled copilot odd as the vendor sends it (``omit``: more fields it leaves out)."""
    item = odd(uid, ts=ts, settlement=settlement, settled_at=settled_at, **extra)
    for key in (*SETTLED_OMITS, *omit):
        del item[key]
    return item


def odds_frame(event: str, entry_id: str, odds: list[dict[str, Any]], **kw: Any) -> bytes:
    """An odds/locked/settled event carrying ``odds``."""
    return frame(event, {"entry_id": entry_id, "data": odds, "type": event}, id=entry_id, **kw)


@dataclass
class Seen:
    """One request the feed received."""

    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    raw_url: str


@dataclass
class FakeFeed:
    """Frames pushed with ``send`` go to the open connection (or the next one)."""

    api_key: str = API_KEY
    retry_ms: int = 20
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    _outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _runner: web.AppRunner | None = None
    _sock: socket.socket | None = None
    base_url: str = ""
    _conn_changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    frames_written: int = 0
    write_started: float | None = None  # loop time of a write still waiting for the socket
    answer: tuple[int, dict[str, str], str] | None = None  # (status, headers, body) instead
    redirect: tuple[int, str] | None = None  # (status, Location) for the next stream request
    redirect_always: bool = False
    port: int = 0  # where to listen (0: a free port)

    async def start(self) -> str:
        """Listen on a free loopback port; returns the API base URL."""
        app = web.Application()
        app.router.add_get("/api/v3/stream/copilot/{sport}/odds", self._stream)
        app.router.add_get("/api/v3/stream/odds/{sport}", self._stream)
        app.router.add_get("/moved/{tail:.*}", self._stream)  # a redirect's same-origin target
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        self._sock = loopback_socket(self.port)
        await web.SockSite(self._runner, self._sock).start()
        port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/api/v3"
        return self.base_url

    async def stop(self) -> None:
        """Close every connection and the listener."""
        self.drop()
        if self._runner:
            if self._sock is not None:
                await stop_accepting([self._sock])  # a client may be reconnecting
            await self._runner.cleanup()

    def send(self, *frames: bytes) -> None:
        """Queue frames for the current or next connection."""
        for f in frames:
            self._outbox.put_nowait(f)

    def drop(self) -> None:
        """Close the current connection after what was queued before."""
        self._outbox.put_nowait(None)

    async def wait_connections(self, n: int, timeout_s: float = 10) -> None:
        """Until at least ``n`` connections have been accepted."""
        async with self._conn_changed:
            await asyncio.wait_for(
                self._conn_changed.wait_for(lambda: self.connections >= n), timeout_s
            )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(request.path, list(request.query.items()), dict(request.headers), str(request.url))
        )
        if self.redirect is not None:
            status, location = self.redirect
            if not self.redirect_always:
                self.redirect = None
            return web.Response(status=status, headers={"Location": location})
        if self.answer is not None:
            status, headers, body = self.answer
            return web.Response(status=status, headers=headers, text=body)
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"error": "Invalid or inactive API key"}, status=401)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(frame("connected", "ok go", retry_ms=self.retry_ms))
        async with self._conn_changed:
            self.connections += 1
            self._conn_changed.notify_all()
        while True:
            item = await self._outbox.get()
            if item is None:
                break
            self.write_started = asyncio.get_running_loop().time()
            await resp.write(item)
            self.write_started = None
            self.frames_written += 1
        return resp

    def write_blocked_for(self) -> float:
        """How long the current write has waited for the client to read (0 if none)."""
        if self.write_started is None:
            return 0.0
        return asyncio.get_running_loop().time() - self.write_started


class Unreachable:
    """A feed address where no feed answers (the pipeline factory's ``feed=``)."""

    answer = None

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def stop(self) -> None:
        return None
