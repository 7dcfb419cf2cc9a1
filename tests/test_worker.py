"""Workers over real loopback HTTP into a real writer: reconnects, cursors, bad events, stalls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ingestor.domain.cursors import Cursor, Cursors
from ingestor.stream.worker import StreamWorker
from tests.conftest import wait_until
from tests.fakefeed import API_KEY, FakeFeed, frame, odd, odds_frame
from tests.pipeline import Pipeline, build_pipeline, supervise

Factory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def make_pipeline(database_url: str) -> AsyncIterator[Factory]:
    """Build pipelines on a fresh feed; everything is torn down afterwards."""
    built: list[Pipeline] = []

    async def factory(**kw: Any) -> Pipeline:
        feed = kw.pop("feed", None) or FakeFeed()
        if not feed.base_url:
            await feed.start()
        p = await build_pipeline(database_url, feed, **kw)
        built.append(p)
        return p

    yield factory
    for p in built:
        await p.close()
        await p.feed.stop()


async def _cursor(pg: Any, group: str) -> str | None:
    return await pg.fetchval(  # type: ignore[no-any-return]
        "SELECT last_entry_id FROM stream_cursors WHERE group_key = $1", group
    )


async def test_reconnect_sends_last_committed_entry_id(make_pipeline: Factory, pg: Any) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    p.feed.send(odds_frame("copilot-odds", "1000-0", [odd("a", ts=1)]))
    p.feed.send(frame("ping", "2024-08-28T18:57:49Z"))  # control frames never move the cursor
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == "1000-0")
    p.feed.drop()
    await p.feed.wait_connections(2)
    assert ("last_entry_id", "1000-0") in p.feed.requests[1].query
    assert not any(k == "last_entry_id" for k, _ in p.feed.requests[0].query)
    assert p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="eof") == 1
    assert await _cursor(pg, p.group.key) == "1000-0"
    assert await p.shutdown() == 0


async def test_bad_and_unknown_events_do_not_stop_the_stream(
    make_pipeline: Factory, pg: Any
) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    p.feed.send(
        frame("copilot-odds", "{not json", id="1-0"),
        frame("copilot-odds", {"entry_id": "2-0", "data": [{"id": "x", "price": "high"}]}),
        frame("brand-new-event", {"hello": 1}),
        odds_frame("copilot-odds", "3-0", [odd("good", price=150, ts=3)]),
    )
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == "3-0")
    assert await pg.fetchval("SELECT price FROM odds WHERE id = 'good'") == 150
    g = p.group.key
    assert p.sample("ingestor_events_rejected_total", group=g, reason="invalid_json") == 1
    assert p.sample("ingestor_events_rejected_total", group=g, reason="wrong_type") == 1
    assert p.sample("ingestor_unknown_events_total", group=g, event_type="brand-new-event") == 1
    assert p.feed.connections == 1  # none of it cost a reconnect
    assert await p.shutdown() == 0


async def test_silent_feed_is_reconnected_by_the_stall_watchdog(make_pipeline: Factory) -> None:
    p = await make_pipeline(stall_timeout_s=0.3)
    supervise(p)
    await p.feed.wait_connections(2)  # the feed sent "connected" and then nothing, not even ping
    assert p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="stall") >= 1
    assert await p.shutdown() == 0


async def test_rejected_key_is_reported_and_retried(make_pipeline: Factory) -> None:
    p = await make_pipeline(api_key="wrong-key-0000", auth_retry_max_s=0.05)
    supervise(p)
    g = p.group.key
    await wait_until(
        lambda: p.sample("ingestor_stream_reconnects_total", group=g, reason="http_401") >= 2
    )
    assert p.sample("ingestor_stream_consecutive_failures", group=g) >= 2
    assert p.sample("ingestor_stream_connected", group=g) == 0
    assert await p.shutdown() == 0


async def test_full_queue_stops_reading_the_socket(make_pipeline: Factory, pg: Any) -> None:
    p = await make_pipeline(queue_max_events=5)
    worker_task = asyncio.create_task(p.workers[0].run())  # no writer yet: nothing drains
    await p.feed.wait_connections(1)
    pad = "x" * 20_000  # large events, so socket buffers hold only a few of them
    sent = 300
    for i in range(sent):
        p.feed.send(odds_frame("copilot-odds", f"{i + 1}-0", [odd(f"o{i}", ts=1, name=pad)]))
    received = p.metrics.events_received.labels(p.group.key, "copilot-odds")
    await wait_until(lambda: p.queue.full())
    # The feed's own write is stuck: the daemon stopped reading the socket, it does not
    # buffer the rest of the stream in memory.
    await wait_until(lambda: p.feed.write_blocked_for() > 0.3)
    assert p.queue.qsize() == 5
    assert received._value.get() < sent / 3, received._value.get()
    assert p.feed.frames_written < sent
    writer_task = asyncio.create_task(p.writer.run())
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == f"{sent}-0", timeout_s=30)
    assert await pg.fetchval("SELECT count(*) FROM odds") == sent
    p.stop.set()
    worker_task.cancel()
    await asyncio.gather(worker_task, return_exceptions=True)
    await p.queue.put(None)
    await writer_task


class _CrashOnce(StreamWorker):
    crashed = False

    async def run(self) -> None:
        if not _CrashOnce.crashed:
            _CrashOnce.crashed = True
            raise RuntimeError("worker bug")
        await super().run()


async def test_crashed_worker_is_restarted(make_pipeline: Factory) -> None:
    p = await make_pipeline(worker_class=_CrashOnce)
    supervise(p)
    await p.feed.wait_connections(1)
    assert p.sample("ingestor_worker_restarts_total", group=p.group.key) == 1
    assert await p.shutdown() == 0


# --- the SSE client against the spec (WHATWG HTML, "Server-sent events") -------------------


def _reconnects(p: Pipeline, reason: str) -> float:
    return p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason=reason)


async def test_reconnect_sends_last_event_id_of_the_last_dispatched_event(
    make_pipeline: Factory,
) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    assert "Last-Event-ID" not in p.feed.requests[0].headers  # nothing seen, nothing stored
    p.feed.send(odds_frame("copilot-odds", "1000-0", [odd("a", ts=1)]))
    # Then the connection drops in the middle of an event whose id line was already read.
    p.feed.send(b'event: copilot-odds\nid: 2000-0\ndata: {"entry_id": "2000-0", "da')
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == "1000-0")
    p.feed.drop()
    await p.feed.wait_connections(2)
    again = p.feed.requests[1]
    assert again.headers["Last-Event-ID"] == "1000-0"  # not the unfinished event's 2000-0
    assert ("last_entry_id", "1000-0") in again.query  # the vendor's own parameter too
    assert await p.shutdown() == 0


async def test_last_event_id_after_a_restart_is_the_committed_one(
    make_pipeline: Factory,
) -> None:
    cursors = Cursors({"copilot:basketball:NBA": Cursor("1700-3", "sse-1700")})
    p = await make_pipeline(cursors=cursors)
    supervise(p)
    await p.feed.wait_connections(1)
    first = p.feed.requests[0]
    assert first.headers["Last-Event-ID"] == "sse-1700"
    assert ("last_entry_id", "1700-3") in first.query
    assert await p.shutdown() == 0


async def test_same_origin_redirect_is_followed_with_the_key(make_pipeline: Factory) -> None:
    feed = FakeFeed()
    await feed.start()
    feed.redirect = (307, "/moved/api/v3/stream/copilot/basketball/odds?league=NBA")
    p = await make_pipeline(feed=feed)
    supervise(p)
    await feed.wait_connections(1)
    feed.send(odds_frame("copilot-odds", "5-0", [odd("a", ts=1)]))
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == "5-0")
    assert [r.path for r in feed.requests] == [
        "/api/v3/stream/copilot/basketball/odds", "/moved/api/v3/stream/copilot/basketball/odds",
    ]  # fmt: skip
    assert feed.requests[1].headers["X-Api-Key"] == API_KEY
    assert p.sample("ingestor_stream_redirects_total", group=p.group.key, outcome="followed") == 1
    assert await p.shutdown() == 0


@pytest.mark.parametrize("status", [301, 307])
async def test_redirect_to_another_origin_is_refused_and_no_key_is_sent(
    make_pipeline: Factory, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    elsewhere = FakeFeed()
    await elsewhere.start()  # another port: another origin
    feed = FakeFeed(redirect_always=True)
    await feed.start()
    feed.redirect = (status, f"{elsewhere.base_url}/stream/copilot/basketball/odds")
    try:
        p = await make_pipeline(feed=feed)
        supervise(p)
        await wait_until(lambda: _reconnects(p, "redirect_refused") >= 1)
        await wait_until(lambda: p.workers[0].last_delay_s > 0)
        assert 15 <= p.workers[0].last_delay_s <= 30  # refused: the slow retry
        assert not elsewhere.requests
        assert p.sample("ingestor_stream_redirects_total", group=p.group.key,
                        outcome="refused") == 1  # fmt: skip
        out = capsys.readouterr().out
        assert f"redirect to {elsewhere.base_url.rsplit('/api', 1)[0]} refused" in out
        assert API_KEY not in out
    finally:
        await elsewhere.stop()


async def test_204_means_stop_reconnecting_so_the_retry_is_slow(
    make_pipeline: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = FakeFeed()
    await feed.start()
    feed.answer = (204, {}, "")
    p = await make_pipeline(feed=feed)
    supervise(p)
    await wait_until(lambda: _reconnects(p, "http_204") >= 1)
    await wait_until(lambda: p.workers[0].last_delay_s > 0)
    assert 15 <= p.workers[0].last_delay_s <= 30
    assert len(feed.requests) == 1
    assert "stop reconnecting" in capsys.readouterr().out
