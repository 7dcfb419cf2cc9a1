"""Edges found in review: hung servers, 429, poison rows, partial events, filters, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingestor.domain.decode import decode_event
from ingestor.domain.errors import DecodeError
from ingestor.metrics import Metrics
from tests.conftest import wait_until
from tests.fakefeed import FakeFeed, odd
from tests.helpers import event, write_batches
from tests.pipeline import build_pipeline, copilot_stream, supervise
from tests.sim import connected, start_sim
from tests.tcpproxy import TcpProxy


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
        server.close()
        await server.wait_closed()


async def test_429_holds_every_new_connection_back(database_url: str) -> None:
    feed = FakeFeed()
    await feed.start()
    feed.answer = (429, {"Retry-After": "20"}, '{"error": "Too Many Requests"}')
    p = await build_pipeline(database_url, feed)
    supervise(p)
    try:
        await wait_until(lambda: p.sample("ingestor_stream_reconnects_total",
                                          group=p.group.key, reason="http_429") >= 1)  # fmt: skip
        assert p.gate is not None
        closed_for = p.gate._closed_until - asyncio.get_running_loop().time()
        assert 18 < closed_for <= 20  # Retry-After honoured, and at least the vendor's 15 s
        assert len(feed.requests) == 1  # nobody knocked again meanwhile
    finally:
        await p.close()
        await feed.stop()


async def test_one_bad_odd_costs_only_itself() -> None:
    payload = {"entry_id": "5-0", "data": [odd("good"), {"id": "bad", "price": "x"}]}
    ev = decode_event("g", "copilot", "copilot-odds", orjson.dumps(payload), "5-0",
                      datetime.now(UTC))  # fmt: skip
    assert [o.id for o in ev.odds] == ["good"]
    assert [e.reason for e in ev.rejected] == ["wrong_type"]
    with pytest.raises(DecodeError):
        decode_event("g", "copilot", "copilot-odds",
                     orjson.dumps({"entry_id": "5-0", "data": [{"id": "bad", "price": "x"}]}),
                     "5-0", datetime.now(UTC))  # fmt: skip


@pytest.mark.parametrize(
    ("entry_id", "item"),
    [
        ("1--1", {}),
        ("1-99999999999999999999", {}),
        ("1-+5", {}),
        ("9223372036854775807-0", {}),  # would pin the cursor for ever
        ("1-0", {"settled_at": "0001-01-01T00:00:00+01:00", "settlement": "Won"}),
        ("1-0", {"settled_at": "9999-12-31T23:00:00-05:00", "settlement": "Won"}),
    ],
)
def test_out_of_range_ids_and_dates_are_rejected(entry_id: str, item: dict[str, Any]) -> None:
    payload = {"entry_id": entry_id, "data": [{**odd("x"), **item}]}
    with pytest.raises(DecodeError):
        decode_event("g", "copilot", "copilot-settled-odds", orjson.dumps(payload), "",
                     datetime.now(UTC))  # fmt: skip


async def test_a_row_postgres_refuses_is_dropped_alone(database_url: str, pg: Any) -> None:
    good = [event("copilot-odds", f"{i}-0", [odd(f"o{i}", ts=i)]) for i in range(1, 7)]
    bad = event("copilot-odds", "4-5", [odd("poison", ts=4)])
    bad.odds[0].league = "N\x00BA"  # past the decoder's check: PostgreSQL text refuses NUL
    metrics = Metrics()
    await write_batches(database_url, [*good[:3], bad, *good[3:]], metrics=metrics)
    ids = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    assert ids == {f"o{i}" for i in range(1, 7)}
    assert sum(v for k, v in _samples(metrics, "ingestor_events_dropped_total")) == 1
    letter = await pg.fetchrow("SELECT * FROM dead_letters")
    assert letter["reason"].startswith("db_") and '"poison"' in letter["payload"]


def _samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for m in metrics.registry.collect() for s in m.samples
            if s.name == name]  # fmt: skip


async def test_fields_a_newer_event_lacks_survive(database_url: str, pg: Any) -> None:
    def settled(ts: float) -> dict[str, Any]:
        item = odd("x", ts=ts, settlement="Won", settled_at="2024-01-01T00:00:00+00:00")
        for key in ("price", "points", "is_main", "is_live", "grouping_key", "selection_line"):
            del item[key]  # what the vendor's settled events leave out
        return item

    fixture = {"fixture": {"id": "F", "home_team_display": "Heat", "start_date":
                           "2024-08-28T20:20:00+00:00"}, "fixture_id": "F", "timestamp": 1,
               "new_status": "live"}  # fmt: skip
    later = {"fixture_id": "F", "timestamp": 2, "new_status": "completed"}
    await write_batches(database_url, [
        event("copilot-odds", "1-0", [odd("x", ts=1, selection_line="over", version_id=1)]),
        event("copilot-settled-odds", "2-0", [settled(2)]),
        event("fixture-status", "1-0", payload={"entry_id": "1-0", "data": fixture}),
    ], [
        event("fixture-status", "2-0", payload={"entry_id": "2-0", "data": later}),
    ])  # fmt: skip
    row = await pg.fetchrow("SELECT * FROM odds WHERE id = 'x'")
    assert (row["selection_line"], row["status"]) == ("over", "settled")
    f = await pg.fetchrow("SELECT * FROM fixtures WHERE fixture_id = 'F'")
    assert (f["home_team_display"], f["status"]) == ("Heat", "completed")
    assert f["start_date"] is not None


async def test_a_late_replay_beside_a_newer_event_changes_nothing(
    database_url: str, pg: Any
) -> None:
    def settled(ts: float) -> dict[str, Any]:
        item = odd("y", ts=ts, settlement="Lost", settled_at="2024-01-01T00:00:00+00:00",
                   version_id=2)  # fmt: skip
        for key in ("price", "points", "is_main", "is_live", "grouping_key", "selection_line"):
            del item[key]
        return item

    await write_batches(
        database_url,
        [event("copilot-odds", "5-0", [odd("y", ts=5, selection_line="new", version_id=2)])],
        [event("copilot-odds", "3-0", [odd("y", ts=3, selection_line="old", version_id=1)]),
         event("copilot-settled-odds", "7-0", [settled(7)])],
    )  # fmt: skip
    row = await pg.fetchrow("SELECT * FROM odds WHERE id = 'y'")
    assert (row["selection_line"], row["version_id"], row["status"]) == ("new", 2, "settled")


async def test_main_line_that_leaves_the_filter_is_updated(database_url: str, pg: Any) -> None:
    sim = await start_sim()
    stream = copilot_stream(["NBA", "NCAAB"]).model_copy(update={"is_main": True})
    p = await build_pipeline(database_url, sim, streams=[stream], rehydrate=True)
    supervise(p)
    try:
        await connected(sim)
        await sim.server.emit(10)
        await wait_until(lambda: _main_count(pg), timeout_s=20)
        moved = next(o for o in sim.server.world.odds("copilot") if o.is_main and
                     o.status == "open")  # fmt: skip
        moved.is_main = False  # the line moved: no lock event, is_main flips
        moved.ts += 1
        sim.server.cut_all(mid_frame=False)  # the reconnect re-hydrates
        await wait_until(lambda: _is_main(pg, moved.id), timeout_s=20)
    finally:
        await p.close()
        await sim.stop()


async def _main_count(pg: Any) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM odds WHERE is_main"))


async def _is_main(pg: Any, uid: str) -> bool:
    return await pg.fetchval("SELECT is_main FROM odds WHERE id = $1", uid) is False


async def test_shutdown_is_bounded_when_the_database_hangs(database_url: str) -> None:
    host_port, _, dbname = database_url.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    await proxy.start()
    feed = FakeFeed()
    await feed.start()
    p = await build_pipeline(f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}", feed,
                             shutdown_timeout_s=1.0)  # fmt: skip
    supervise(p)
    try:
        await feed.wait_connections(1)
        await proxy.cut()
        from tests.fakefeed import odds_frame

        feed.send(odds_frame("copilot-odds", "1-0", [odd("a")]))
        await wait_until(lambda: p.sample("ingestor_events_queued_total") >= 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await p.shutdown() == 1  # the writer could not commit: say so, do not hang
        assert loop.time() - started < 3
    finally:
        await p.close()
        await feed.stop()
        await proxy.close()
