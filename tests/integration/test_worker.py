"""Workers over real loopback HTTP into a real writer: reconnects, cursors, bad events, stalls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingestor.stream.worker import StreamWorker
from loopback.listening import stop_listening
from tests.conftest import wait_until
from tests.support.fakefeed import frame, odd, odds_frame
from tests.support.pipeline import Pipeline, PipelineFactory, build_pipeline, supervise


async def _cursor(pg: Any, group: str) -> str | None:
    return await pg.fetchval(  # type: ignore[no-any-return]
        "SELECT last_entry_id FROM stream_cursors WHERE group_key = $1", group
    )


async def test_reconnect_sends_last_committed_entry_id(
    make_pipeline: PipelineFactory, pg: Any
) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    p.feed.send(odds_frame("copilot-odds", "1000-0", [odd("a", ts=1)]))
    p.feed.send(frame("ping", "2024-08-28T18:57:49Z"))  # control frames never move the cursor
    await wait_until(lambda: p.cursor() == "1000-0")
    p.feed.drop()
    await p.feed.wait_connections(2)
    assert ("last_entry_id", "1000-0") in p.feed.requests[1].query
    assert not any(k == "last_entry_id" for k, _ in p.feed.requests[0].query)
    assert p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="eof") == 1
    assert await _cursor(pg, p.group.key) == "1000-0"
    assert await p.shutdown() == 0


async def test_silent_feed_is_reconnected_by_the_stall_watchdog(
    make_pipeline: PipelineFactory,
) -> None:
    p = await make_pipeline(stall_timeout_s=0.3)
    supervise(p)
    await p.feed.wait_connections(2)  # the feed sent "connected" and then nothing, not even ping
    assert p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="stall") >= 1
    assert await p.shutdown() == 0


async def test_full_queue_stops_reading_the_socket(make_pipeline: PipelineFactory, pg: Any) -> None:
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
    try:
        await wait_until(lambda: p.cursor() == f"{sent}-0", timeout_s=30)
        assert await pg.fetchval("SELECT count(*) FROM odds") == sent
    finally:  # started by hand: make_pipeline's close does not know these two
        p.stop.set()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await p.queue.put(None)
        await asyncio.wait_for(writer_task, 30)


class _CrashOnce(StreamWorker):
    crashed = False

    async def run(self) -> None:
        if not _CrashOnce.crashed:
            _CrashOnce.crashed = True
            raise RuntimeError("worker bug")
        await super().run()


async def test_crashed_worker_is_restarted(make_pipeline: PipelineFactory) -> None:
    _CrashOnce.crashed = False  # class-wide: the supervisor builds the worker again
    p = await make_pipeline(worker_class=_CrashOnce)
    supervise(p)
    await p.feed.wait_connections(1)
    assert p.sample("ingestor_worker_restarts_total", group=p.group.key) == 1
    assert await p.shutdown() == 0


async def test_bad_and_unknown_events_become_dead_letters_and_the_stream_goes_on(
    make_pipeline: PipelineFactory, pg: Any
) -> None:
    p = await make_pipeline()
    supervise(p)
    await p.feed.wait_connections(1)
    p.feed.send(
        frame("copilot-odds", "{not json", id="1-0"),
        frame(
            "copilot-odds", {"entry_id": "2-0", "data": [{"id": "x", "price": "high"}]}, id="2-0"
        ),
        frame("copilot-odds", {"entry_id": "3-0", "data": [{"price": -110}]}, id="3-0"),
        b"event: copilot-odds\nid: 4-0\ndata: " + b'{"entry_id": "4-0", "data": "\xff\xfe"}\n\n',
        frame(
            "copilot-odds",
            {"entry_id": "5-0", "data": [odd("ok", price=120, ts=5), odd("half", price="bad")]},
        ),
        frame("copilot-odds", {"entry_id": "6-0", "data": [odd("big", name="x" * 5000)]}),
        frame("brand-new-event", {"hello": 1}),
        odds_frame("copilot-odds", "7-0", [odd("last", price=130, ts=7)]),
    )
    await wait_until(lambda: p.cursor() == "7-0")
    g = p.group.key
    assert p.sample("ingestor_events_rejected_total", group=g, reason="invalid_json") == 2
    assert p.sample("ingestor_events_rejected_total", group=g, reason="wrong_type") == 2
    assert p.sample("ingestor_unknown_events_total", group=g, event_type="brand-new-event") == 1
    assert await pg.fetchval("SELECT price FROM odds WHERE id = 'last'") == 130
    await wait_until(lambda: _count(pg, "dead_letters", 5))
    rows = await pg.fetch("SELECT * FROM dead_letters ORDER BY dead_letter_id")
    assert [r["reason"] for r in rows] == [
        "invalid_json",
        "wrong_type",
        "missing_id",
        "invalid_json",
        "wrong_type",
    ]
    assert rows[0]["payload"] == "{not json" and rows[0]["event_id"] == "1-0"
    assert '"half"' in rows[4]["payload"] and "one odd" in rows[4]["detail"]
    assert "\ufffd" in rows[3]["payload"]  # invalid UTF-8 kept, readably
    ids = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    assert ids == {"ok", "big", "last"}  # the good odd beside the bad one is kept
    assert p.feed.connections == 1  # none of it cost a reconnect
    assert await p.shutdown() == 0


async def _count(pg: Any, table: str, n: int) -> bool:
    return int(await pg.fetchval(f"SELECT count(*) FROM {table}")) >= n


async def test_event_over_the_size_bound_is_a_dead_letter(
    make_pipeline: PipelineFactory, pg: Any
) -> None:
    p = await make_pipeline()
    p.workers[0]._parser = type(p.workers[0]._parser)(2048)  # a small bound for the test
    supervise(p)
    await p.feed.wait_connections(1)
    p.feed.send(
        odds_frame("copilot-odds", "1-0", [odd("huge", name="y" * 4000)]),
        odds_frame("copilot-odds", "2-0", [odd("fine", ts=2)]),
    )
    await wait_until(lambda: p.cursor() == "2-0")
    await wait_until(lambda: _count(pg, "dead_letters", 1))
    assert await pg.fetchval("SELECT reason FROM dead_letters") == "too_large"
    assert await pg.fetchval("SELECT count(*) FROM odds WHERE id = 'fine'") == 1


async def test_pings_only_is_measured_and_warned(
    make_pipeline: PipelineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    p = await make_pipeline(no_data_warning_s=0.2)
    supervise(p)
    await p.feed.wait_connections(1)
    for i in range(3):
        p.feed.send(frame("ping", "2024-08-28T18:57:49Z"))
        await wait_until(
            lambda i=i: (
                p.sample("ingestor_events_received_total", group=p.group.key, event_type="ping")
                >= i + 1
            )
        )
    await wait_until(lambda: p.sample("ingestor_stream_no_data_seconds", group=p.group.key) > 0)
    await wait_until(lambda: _pinged_past(p, 0.25), timeout_s=5)
    assert "stream_no_data" in capsys.readouterr().out


async def _pinged_past(p: Pipeline, seconds: float) -> bool:
    p.feed.send(frame("ping", "now"))
    await asyncio.sleep(0.05)  # pace of the pings the test sends, not a synchronisation
    return p.sample("ingestor_stream_no_data_seconds", group=p.group.key) > seconds


async def test_server_that_never_answers_is_a_connect_error(database_url: str) -> None:
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()  # accept, read nothing, answer nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    class Feed:
        base_url = f"http://127.0.0.1:{port}/api/v3"

    p = await build_pipeline(database_url, Feed(), connect_timeout_s=0.3)
    supervise(p)
    try:
        reason = {"group": p.group.key, "reason": "connect_error"}
        await wait_until(lambda: p.sample("ingestor_stream_reconnects_total", **reason) >= 2)
    finally:
        await p.close()
        hold.set()
        await stop_listening(server)
        await server.wait_closed()


async def test_429_holds_every_new_connection_back(make_pipeline: PipelineFactory) -> None:
    p = await make_pipeline(answer=(429, {"Retry-After": "20"}, '{"error": "Too Many Requests"}'))
    supervise(p)
    await wait_until(lambda: p.reconnects("http_429") >= 1)
    assert p.gate is not None
    closed_for = p.gate._closed_until - asyncio.get_running_loop().time()
    assert 18 < closed_for <= 20  # Retry-After honoured, and at least the vendor's 15 s
    # Any new connection of the process (another group's, a reconnect) waits at the gate.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(p.gate.acquire(), timeout=0.5)
    assert len(p.feed.requests) == 1  # nobody knocked again meanwhile
