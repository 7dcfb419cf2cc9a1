"""Opening a stream per the SSE spec and the vendor: keys, ids, redirects, refusals, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog.testing
from yarl import URL

from ingestor.domain.cursors import Cursor
from tests.conftest import free_port, wait_until
from tests.support.fakefeed import API_KEY, FakeFeed, Unreachable, odd, odds_frame
from tests.support.pipeline import PipelineFactory, supervise


async def test_rejected_key_is_reported_and_retried(make_pipeline: PipelineFactory) -> None:
    p = await make_pipeline(api_key="wrong-key-0000", auth_retry_max_s=0.05)
    supervise(p)
    g = p.group.key
    await wait_until(
        lambda: p.sample("ingestor_stream_reconnects_total", group=g, reason="http_401") >= 2
    )
    assert p.sample("ingestor_stream_consecutive_failures", group=g) >= 2
    assert p.sample("ingestor_stream_connected", group=g) == 0
    assert await p.shutdown() == 0


async def test_reconnect_sends_last_event_id_of_the_last_dispatched_event(
    make_pipeline: PipelineFactory,
) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    assert "Last-Event-ID" not in p.feed.requests[0].headers  # nothing seen, nothing stored
    p.feed.send(odds_frame("copilot-odds", "1000-0", [odd("a", ts=1)]))
    # Then the connection drops in the middle of an event whose id line was already read.
    p.feed.send(b'event: copilot-odds\nid: 2000-0\ndata: {"entry_id": "2000-0", "da')
    await wait_until(lambda: p.cursor() == "1000-0")
    p.feed.drop()
    await p.feed.wait_connections(2)
    again = p.feed.requests[1]
    assert again.headers["Last-Event-ID"] == "1000-0"  # not the unfinished event's 2000-0
    assert ("last_entry_id", "1000-0") in again.query  # the vendor's own parameter too
    assert await p.shutdown() == 0


async def test_an_empty_id_clears_the_last_event_id_sent_on_reconnect(
    make_pipeline: PipelineFactory,
) -> None:
    """A server's empty ``id:`` clears the id (the spec): the reconnect sends none, even though
    a committed cursor carries one."""
    cursors = {"copilot:basketball:NBA": Cursor("900-0", "sse-900")}
    p = await make_pipeline(cursors=cursors)
    supervise(p)
    await p.feed.wait_connections(1)
    assert p.feed.requests[0].headers["Last-Event-ID"] == "sse-900"  # after a restart
    p.feed.send(odds_frame("copilot-odds", "1000-0", [odd("a", ts=1)]))
    await wait_until(lambda: p.cursor() == "1000-0")  # committed with its SSE id 1000-0
    p.feed.send(b"event: ping\nid\ndata: now\n\n")  # moves no cursor, clears the id
    pings = {"group": p.group.key, "event_type": "ping"}
    await wait_until(lambda: p.sample("ingestor_events_received_total", **pings) >= 1)
    p.feed.drop()
    await p.feed.wait_connections(2)
    again = p.feed.requests[1]
    assert "Last-Event-ID" not in again.headers  # not the committed event's 1000-0
    assert ("last_entry_id", "1000-0") in again.query  # the vendor's own cursor still goes
    assert await p.shutdown() == 0


async def test_last_event_id_after_a_restart_is_the_committed_one(
    make_pipeline: PipelineFactory,
) -> None:
    cursors = {"copilot:basketball:NBA": Cursor("1700-3", "sse-1700")}
    p = await make_pipeline(cursors=cursors)
    supervise(p)
    await p.feed.wait_connections(1)
    first = p.feed.requests[0]
    assert first.headers["Last-Event-ID"] == "sse-1700"
    assert ("last_entry_id", "1700-3") in first.query
    assert await p.shutdown() == 0


async def test_same_origin_redirect_is_followed_with_the_key(
    make_pipeline: PipelineFactory,
) -> None:
    feed = FakeFeed()
    await feed.start()
    feed.redirect = (307, "/moved/api/v3/stream/copilot/basketball/odds?league=NBA")
    p = await make_pipeline(feed=feed)
    supervise(p)
    await feed.wait_connections(1)
    feed.send(odds_frame("copilot-odds", "5-0", [odd("a", ts=1)]))
    await wait_until(lambda: p.cursor() == "5-0")
    assert [r.path for r in feed.requests] == [
        "/api/v3/stream/copilot/basketball/odds",
        "/moved/api/v3/stream/copilot/basketball/odds",
    ]
    assert feed.requests[1].headers["X-Api-Key"] == API_KEY
    assert p.sample("ingestor_stream_redirects_total", group=p.group.key, outcome="followed") == 1
    assert await p.shutdown() == 0


@pytest.mark.parametrize("status", [301, 307])
async def test_redirect_to_another_origin_is_refused_and_no_key_is_sent(
    make_pipeline: PipelineFactory, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    elsewhere = FakeFeed()
    await elsewhere.start()  # another port: another origin
    feed = FakeFeed(redirect_always=True)
    await feed.start()
    feed.redirect = (status, f"{elsewhere.base_url}/stream/copilot/basketball/odds")
    try:
        p = await make_pipeline(feed=feed)
        supervise(p)
        await wait_until(lambda: p.reconnects("redirect_refused") >= 1)
        await wait_until(lambda: p.workers[0].last_delay_s > 0)
        assert 15 <= p.workers[0].last_delay_s <= 30  # refused: the slow retry
        assert not elsewhere.requests
        assert (
            p.sample("ingestor_stream_redirects_total", group=p.group.key, outcome="refused") == 1
        )
        out = capsys.readouterr().out
        assert f"redirect to {elsewhere.base_url.rsplit('/api', 1)[0]} refused" in out
        assert API_KEY not in out
    finally:
        await elsewhere.stop()


async def test_204_means_stop_reconnecting_so_the_retry_is_slow(
    make_pipeline: PipelineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = FakeFeed()
    await feed.start()
    feed.answer = (204, {}, "")
    p = await make_pipeline(feed=feed)
    supervise(p)
    await wait_until(lambda: p.reconnects("http_204") >= 1)
    await wait_until(lambda: p.workers[0].last_delay_s > 0)
    assert 15 <= p.workers[0].last_delay_s <= 30
    assert len(feed.requests) == 1
    assert "stop reconnecting" in capsys.readouterr().out


async def test_rejected_key_retries_slowly(make_pipeline: PipelineFactory) -> None:
    p = await make_pipeline(api_key="wrong-key-0000")
    supervise(p)
    await wait_until(lambda: p.reconnects("http_401") >= 1)
    await wait_until(lambda: p.workers[0].last_delay_s > 0)
    assert 15 <= p.workers[0].last_delay_s <= 30  # first auth retry: 30 s, jittered
    assert len(p.feed.requests) == 1


@pytest.mark.parametrize(
    ("answer", "reason", "logged"),
    [
        (
            (400, {"Content-Type": "text/plain"}, "sportsbook is required"),
            "http_400",
            "sportsbook is required",
        ),
        (
            (200, {"Content-Type": "text/html"}, "<html><h1>502 Bad Gateway</h1></html>"),
            "bad_content_type",
            "<html><h1>502 Bad Gateway",
        ),
        (
            (503, {"Content-Type": "application/json"}, '{"error": "maintenance"}'),
            "http_503",
            "maintenance",
        ),
    ],
)
async def test_http_answers_name_the_problem(
    make_pipeline: PipelineFactory,
    capsys: pytest.CaptureFixture[str],
    answer: Any,
    reason: str,
    logged: str,
) -> None:
    p = await make_pipeline(answer=answer)
    supervise(p)
    await wait_until(lambda: p.reconnects(reason) >= 1)
    assert logged in capsys.readouterr().out
    assert p.sample("ingestor_stream_consecutive_failures", group=p.group.key) >= 1


class SilentListener:
    """A port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.accepted: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.append(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for writer in self.accepted:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("refused", "refused: nothing listens on that port"),
        ("dns", "DNS: the host name does not resolve"),
        ("tls", "TLS: the handshake failed"),
        ("timeout", "timeout: no answer (response headers) within 0.3 s"),
    ],
)
async def test_a_feed_that_cannot_be_reached_is_named_with_the_reason(
    make_pipeline: PipelineFactory, where: str, reason: str
) -> None:
    """One line says which host and port failed and why, in words; the key is never in it."""
    listener = SilentListener()
    if where == "refused":
        host, port = "127.0.0.1", free_port()
        feed: Any = Unreachable(f"http://{host}:{port}/api/v3")
    elif where == "dns":
        host, port = "no-such-host.invalid", 8443
        feed = Unreachable(f"https://{host}:{port}/api/v3")
    elif where == "tls":  # https:// to a plain HTTP server
        plain = FakeFeed()
        await plain.start()
        url = URL(plain.base_url)
        host, port = url.host or "", url.port or 0
        feed = Unreachable(str(url.with_scheme("https")))
        feed.stop = plain.stop
    else:
        port = await listener.start()
        host = "127.0.0.1"
        feed = Unreachable(f"http://{host}:{port}/api/v3")
    try:
        p = await make_pipeline(feed=feed, connect_timeout_s=0.3)
        with structlog.testing.capture_logs() as logged:
            supervise(p)
            await wait_until(lambda: p.reconnects("connect_error") >= 1)
        lines = [e for e in logged if e["event"] == "stream_connect_failed"]
        assert lines, "no stream_connect_failed line"
        line = lines[0]
        assert (line["host"], line["port"]) == (host, port), line
        assert line["reason"].startswith(reason), line
        if where == "tls":
            assert "is it plain HTTP?" in line["reason"], line
        assert API_KEY not in json.dumps(lines, default=str)
        assert await p.shutdown() == 0
    finally:
        await listener.close()
