"""Stream-side logic without a network or a database: backoff, and gap recovery's filters and
inferred locks against fake REST answers and a fake database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ingestor.config import RestSettings, StreamConfig, StreamSettings
from ingestor.domain.cursors import Cursor
from ingestor.domain.events import Barrier, DecodedEvent, EventQueue
from ingestor.domain.groups import make_groups
from ingestor.metrics import Metrics
from ingestor.ports import HeldOdd
from ingestor.stream.recovery import Recovery
from ingestor.stream.rehydrate import Rehydrator, snapshot_params
from ingestor.stream.rest import RestError
from ingestor.stream.worker import Shared, StreamWorker
from tests.conftest import wait_until
from tests.support.fakefeed import odd

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GROUP_KEY = "copilot:basketball:NBA"  # the one group of _tracking


def _worker(**kw: float) -> StreamWorker:
    (group,) = make_groups([StreamConfig(kind="copilot", sport="basketball", leagues=["NBA"])], 10)
    settings = StreamSettings(
        api_base_url="http://x",
        max_event_bytes=1024,
        reconnect_initial_s=kw.get("initial", 1.0),
        reconnect_max_s=kw.get("max", 60.0),
    )
    no_session: Any = None  # backoff is pure: nothing is ever requested
    shared = Shared(no_session, settings, asyncio.Queue(), Metrics(), _NoCursors(), asyncio.Event())
    return StreamWorker(group, shared)


class _NoCursors:
    """No group ever committed."""

    def committed(self, group_key: str) -> Cursor | None:
        return None


def test_backoff_is_full_jitter_under_a_cap_and_never_below_the_servers_retry() -> None:
    w = _worker(initial=1.0, max=8.0)
    w.failures = 2
    delays = [w._backoff_s() for _ in range(300)]
    assert min(delays) >= 0 and max(delays) <= 4.0 and max(delays) > 2.0  # jitter up to 1*2^2
    w.failures = 30
    assert max(w._backoff_s() for _ in range(300)) <= 8.0  # capped
    w._parser.feed(b"retry: 5000\n\n")
    assert min(w._backoff_s() for _ in range(300)) >= 5.0  # the server's retry is the floor
    w._parser.retry_ms = 10**9
    assert w._backoff_s() <= 8.0  # but a silly retry does not park the group


def test_after_a_clean_drop_the_retry_is_the_floor_plus_a_little() -> None:
    w = _worker()
    w._parser.feed(b"retry: 1000\n\n")
    delays = [w._backoff_s() for _ in range(300)]
    assert min(delays) >= 1.0 and max(delays) <= 1.2


class FakeRest:
    """REST answers from a dict of fixture id -> odds; it ignores filters it is sent."""

    def __init__(self, fixtures: dict[str, list[dict[str, Any]]]) -> None:
        self.fixtures = fixtures
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    async def get_pages(self, path: str, params: list[tuple[str, str]], _: int) -> list[Any]:
        self.calls.append((path, params))
        return [{"id": f, "status": "unplayed", "league": "NBA"} for f in self.fixtures]

    async def get(self, path: str, params: list[tuple[str, str]]) -> Any:
        self.calls.append((path, params))
        if ("settled", "true") in params:
            return {"data": []}
        ids = [v for k, v in params if k == "fixture_id"]
        return {"data": [{"id": f, "odds": self.fixtures[f]} for f in ids]}


class FakeReader:
    def __init__(self, held: dict[str, HeldOdd]) -> None:
        self.held = held

    async def odds_of_fixtures(
        self,
        fixture_ids: Sequence[str],
        stream: str,
        sportsbooks: Sequence[str] | None,
        markets: Sequence[str] | None,
    ) -> dict[str, HeldOdd]:
        return self.held

    async def known_fixtures(
        self, stream: str, leagues: Sequence[str], window_h: float
    ) -> list[str]:
        return []


async def test_snapshot_rows_pass_every_filter_and_held_odds_are_repaired() -> None:
    stream = StreamConfig(
        kind="copilot",
        sport="basketball",
        leagues=["NBA"],
        markets=["Moneyline"],
        is_main=True,
        odds_format="DECIMAL",
    )
    (group,) = make_groups([stream], 10)
    rest = FakeRest(
        {
            "F1": [
                odd("main", fixture_id="F1", market="Moneyline", is_main=True, ts=10),
                odd("alt", fixture_id="F1", market="Moneyline", is_main=False, ts=10),
                odd("other-market", fixture_id="F1", market="Totals", is_main=True, ts=10),
                odd("other-league", fixture_id="F1", market="Moneyline", league="WNBA", ts=10),
                odd("moved", fixture_id="F1", market="Moneyline", is_main=False, ts=10),
            ]
        }
    )
    held = {
        "moved": HeldOdd("open", T0, b"\x00" * 25),  # was main; the line moved
        "gone": HeldOdd("open", T0, b"\x00" * 25),  # not returned: suspended
    }
    queue: EventQueue = asyncio.Queue()
    rest_client: Any = rest  # the REST client's two verbs, answered from a dict
    reader: Any = FakeReader(held)
    rehydrator = Rehydrator(rest_client, reader, queue, Metrics(), RestSettings(), _nothing)
    snap = await rehydrator.run(group, epoch=7)
    # What may have changed: every odd kept (its time), and those held but not returned.
    assert snap.complete and snap.changed == {"main": _at(10), "moved": _at(10), "gone": None}
    assert snap.epoch == 7  # the scope it makes is fenced with it
    assert all(ev.epoch == 7 for ev in _drain_copy(queue))
    odds_calls = [p for path, p in rest.calls if path.endswith("/odds")]
    assert all(("odds_format", "DECIMAL") in p and ("market", "Moneyline") in p for p in odds_calls)
    rows = [r for ev in _drain(queue) for r in ev.odds]
    kinds = {r.id: (r.kind.label, r.is_main) for r in rows}
    assert kinds == {"main": ("odds", True), "moved": ("odds", False), "gone": ("locked", None)}
    assert snapshot_params(group) == [("market", "Moneyline"), ("odds_format", "DECIMAL")]


class _CommitCountingQueue(asyncio.Queue[DecodedEvent | Barrier | None]):
    """Notes, at every put of odds, how many chunks of odds were queued and not committed."""

    def __init__(self) -> None:
        super().__init__()
        self.uncommitted = 0
        self.ahead: list[int] = []

    async def put(self, item: DecodedEvent | Barrier | None) -> None:
        if isinstance(item, DecodedEvent) and item.odds:
            self.ahead.append(self.uncommitted)
            self.uncommitted += 1
        await super().put(item)

    async def commit(self) -> None:
        """The writer's flushed(): everything queued so far is committed."""
        _drain(self)
        self.uncommitted = 0


async def test_a_snapshot_never_has_two_chunks_queued_and_uncommitted() -> None:
    """Queued all at once, a large snapshot went into one long flush and the stream's events
    waited behind it; each chunk now waits until the one before it is committed."""
    (group,) = make_groups([StreamConfig(kind="copilot", sport="basketball", leagues=["NBA"])], 10)
    fixtures = {f"F{i}": [odd(f"o{i}", fixture_id=f"F{i}", ts=10)] for i in range(12)}
    queue = _CommitCountingQueue()
    rest_client: Any = FakeRest(fixtures)
    reader: Any = FakeReader({})
    rehydrator = Rehydrator(rest_client, reader, queue, Metrics(), RestSettings(), queue.commit)
    snap = await rehydrator.run(group)
    assert snap.complete and snap.rows == 12
    assert queue.ahead == [0, 0, 0]  # three chunks (5, 5, 2 fixtures), each alone
    assert queue.uncommitted == 0 and queue.empty()  # and the last committed before it returned


class _ScopeLedger:
    """A ledger that records gaps (each once ``gate`` is open, numbered from 1) and notes
    every scope and close it is asked for (a close waits for ``close_gate``)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, int]] = []
        self.closed: list[int] = []
        self.opened = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.close_gate = asyncio.Event()  # closes wait for it
        self.close_gate.set()
        self.closing = self.close_cancelled = 0

    async def open(self, *args: object, **kwargs: object) -> int:
        await self.gate.wait()
        self.opened += 1
        return self.opened

    async def scope(self, group_key: str, changed: object, taken_at: datetime, epoch: int) -> int:
        self.scopes.append((group_key, epoch))
        return 0

    async def close(self, gap_ids: Sequence[int], state: str, detail: str) -> None:
        self.closing += 1
        try:
            await self.close_gate.wait()
        except asyncio.CancelledError:
            self.close_cancelled += 1
            raise
        self.closed += gap_ids


def _tracking(
    rest: FakeRest | None = None, settings: RestSettings | None = None
) -> tuple[Recovery, _ScopeLedger, Metrics]:
    """Gap tracking of one copilot group, begun under epoch 5 from a committed cursor, its
    snapshots answered by ``rest`` (one fixture, one odd, by default)."""
    (group,) = make_groups([StreamConfig(kind="copilot", sport="basketball", leagues=["NBA"])], 10)
    rest_client: Any = rest or FakeRest({"F1": [odd("o1", fixture_id="F1", ts=10)]})
    reader: Any = FakeReader({})
    metrics = Metrics()
    queue: EventQueue = asyncio.Queue()
    rehydrator = Rehydrator(
        rest_client, reader, queue, metrics, settings or RestSettings(), _nothing
    )
    ledger = _ScopeLedger()
    ledger_port: Any = ledger
    recovery = Recovery(group, rehydrator, ledger_port, metrics, asyncio.Event())
    recovery.begin(5, Cursor("1796523733046-0", None))
    return recovery, ledger, metrics


async def test_gap_tracking_scopes_with_the_epoch_its_snapshot_was_queued_under() -> None:
    recovery, ledger, _ = _tracking()
    assert recovery.connected() is not None  # resumed from a cursor: a gap
    await wait_until(lambda: ledger.scopes, timeout_s=5)
    assert ledger.scopes == [(GROUP_KEY, 5)]
    await recovery.stop()


async def _first_connection(recovery: Recovery, ledger: _ScopeLedger) -> None:
    """A connection that received one event (the vendor's newest) and scoped its gap."""
    recovery.connected()
    recovery.received((1796523733050, 0))
    await wait_until(lambda: len(ledger.scopes) == 1, timeout_s=5)


async def test_a_replayed_connection_still_scopes_the_groups_other_gaps() -> None:
    # After a storm of reconnects (no snapshot lasted long enough to scope), the stream
    # settles on a connection the vendor replays: its own gap closes as replayed, and its
    # snapshot must scope the gaps before it, or they stay open until the next reconnect.
    recovery, ledger, _ = _tracking()
    await _first_connection(recovery, ledger)
    ledger.gate.clear()  # the next gap is recorded only after the replay is seen
    recovery.connected()
    recovery.received((1796523733049, 0))  # one received before: the vendor replays
    ledger.gate.set()
    await wait_until(lambda: ledger.closed, timeout_s=5)
    await wait_until(lambda: len(ledger.scopes) == 2, timeout_s=5)
    assert ledger.closed == [2]  # its own gap, once
    await recovery.stop()


async def test_stopping_cancels_the_close_of_a_replayed_gap_still_in_flight() -> None:
    # Stopped while it tells the ledger that its connection was replayed, gap tracking leaves
    # no task behind: the close goes with the rest (the gap stays open; the next snapshot
    # scopes it and its repair finds nothing missing).
    recovery, ledger, _ = _tracking()
    await _first_connection(recovery, ledger)
    recovery.connected()
    await wait_until(lambda: len(ledger.scopes) == 2, timeout_s=5)  # its gap recorded, scoped
    ledger.close_gate.clear()
    recovery.received((1796523733049, 0))  # one received before: the vendor replays
    await wait_until(lambda: ledger.closing == 1, timeout_s=5)
    await recovery.stop()
    assert ledger.close_cancelled == 1 and ledger.closed == []


class _GatedRest(FakeRest):
    """REST answers that wait for ``gate`` (counting the listings asked for)."""

    def __init__(self, fixtures: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(fixtures)
        self.gate = asyncio.Event()
        self.listings = 0

    async def get_pages(self, path: str, params: list[tuple[str, str]], _: int) -> list[Any]:
        self.listings += 1
        await self.gate.wait()
        return await super().get_pages(path, params, _)


async def test_reconnects_during_a_snapshot_queue_one_more_instead_of_cancelling_it() -> None:
    # Reconnects faster than a snapshot used to cancel each one before it could finish: in
    # a storm, none did (no gap scoped for 7.5 minutes of a soak). Now the running snapshot
    # finishes and scopes, and one more (the newest connection's) follows it.
    rest = _GatedRest({"F1": [odd("o1", fixture_id="F1", ts=10)]})
    recovery, ledger, _ = _tracking(rest)
    for _ in range(3):
        recovery.connected()
        await wait_until(lambda: rest.listings == 1, timeout_s=5)
        await asyncio.sleep(0)  # a yield: the waiting snapshot starts to wait, then is replaced
    rest.gate.set()
    await wait_until(lambda: len(ledger.scopes) == 2, timeout_s=5)
    await wait_until(lambda: rest.listings == 2, timeout_s=5)
    await recovery.stop()
    assert rest.listings == 2 and len(ledger.scopes) == 2  # the second connection's never ran


class _FailingOnceRest(FakeRest):
    """The fixture listing fails the first time (the snapshot is not whole)."""

    def __init__(self, fixtures: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(fixtures)
        self.listings = 0

    async def get_pages(self, path: str, params: list[tuple[str, str]], _: int) -> list[Any]:
        self.listings += 1
        if self.listings == 1:
            raise RestError("GET /copilot/fixtures: HTTP 503")
        return await super().get_pages(path, params, _)


async def test_a_snapshot_waiting_to_be_taken_again_gives_way_to_a_newer_connection() -> None:
    # The first snapshot failed and waits an hour to be taken again: a new connection must
    # not wait behind it, its own snapshot runs at once.
    rest = _FailingOnceRest({"F1": [odd("o1", fixture_id="F1", ts=10)]})
    recovery, ledger, metrics = _tracking(rest, RestSettings(rehydrate_retry_s=3600))
    recovery.connected()
    partial = {"group": GROUP_KEY, "result": "partial"}
    samples = metrics.registry.get_sample_value
    await wait_until(lambda: samples("ingestor_rehydrations_total", partial), timeout_s=5)
    recovery.connected()
    await wait_until(lambda: ledger.scopes, timeout_s=5)
    assert rest.listings == 2 and ledger.scopes == [(GROUP_KEY, 5)]
    await recovery.stop()


async def _nothing() -> None:
    """The writer's flushed(): nothing to wait for here."""


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _drain_copy(queue: EventQueue) -> list[Any]:
    """What the queue holds, left in it."""
    items = _drain(queue)
    for item in items:
        queue.put_nowait(item)
    return items


def _drain(queue: EventQueue) -> list[Any]:
    out = []
    while not queue.empty():
        item = queue.get_nowait()
        assert item is not None
        out.append(item)
    return out
