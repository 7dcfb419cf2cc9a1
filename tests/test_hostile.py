"""Hostile answers and bad input: clear errors, dead letters, nothing lost, nothing leaked."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.fakefeed import API_KEY, FakeFeed, frame, odd, odds_frame
from tests.pipeline import Pipeline, build_pipeline, supervise

Factory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def make_pipeline(database_url: str) -> AsyncIterator[Factory]:
    """Pipelines on fresh local feeds, torn down afterwards."""
    built: list[Pipeline] = []

    async def factory(**kw: Any) -> Pipeline:
        feed = FakeFeed()
        await feed.start()
        answer = kw.pop("answer", None)
        feed.answer = answer
        p = await build_pipeline(database_url, feed, **kw)
        built.append(p)
        supervise(p)
        return p

    yield factory
    for p in built:
        await p.close()
        await p.feed.stop()


def _reconnects(p: Pipeline, reason: str) -> float:
    return p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason=reason)


async def test_bad_events_become_dead_letters_and_the_stream_goes_on(
    make_pipeline: Factory, pg: Any
) -> None:
    p = await make_pipeline()
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
        odds_frame("copilot-odds", "7-0", [odd("last", price=130, ts=7)]),
    )
    await wait_until(lambda: p.cursors.entry_id(p.group.key) == "7-0")
    await wait_until(lambda: _count(pg, "dead_letters", 5))
    rows = await pg.fetch("SELECT * FROM dead_letters ORDER BY dead_letter_id")
    assert [r["reason"] for r in rows] == [
        "invalid_json", "wrong_type", "missing_id", "invalid_json", "wrong_type",
    ]  # fmt: skip
    assert rows[0]["payload"] == "{not json" and rows[0]["event_id"] == "1-0"
    assert '"half"' in rows[4]["payload"] and "one odd" in rows[4]["detail"]
    assert "\ufffd" in rows[3]["payload"]  # invalid UTF-8 kept, readably
    ids = {r["id"] for r in await pg.fetch("SELECT id FROM odds")}
    assert ids == {"ok", "big", "last"}  # the good odd beside the bad one is kept
    assert p.feed.connections == 1


async def _count(pg: Any, table: str, n: int) -> bool:
    return int(await pg.fetchval(f"SELECT count(*) FROM {table}")) >= n


async def test_event_over_the_size_bound_is_a_dead_letter(database_url: str, pg: Any) -> None:
    feed = FakeFeed()
    await feed.start()
    p = await build_pipeline(database_url, feed)
    p.workers[0]._parser = type(p.workers[0]._parser)(2048)  # a small bound for the test
    supervise(p)
    try:
        await feed.wait_connections(1)
        feed.send(odds_frame("copilot-odds", "1-0", [odd("huge", name="y" * 4000)]),
                  odds_frame("copilot-odds", "2-0", [odd("fine", ts=2)]))  # fmt: skip
        await wait_until(lambda: p.cursors.entry_id(p.group.key) == "2-0")
        await wait_until(lambda: _count(pg, "dead_letters", 1))
        assert await pg.fetchval("SELECT reason FROM dead_letters") == "too_large"
        assert await pg.fetchval("SELECT count(*) FROM odds WHERE id = 'fine'") == 1
    finally:
        await p.close()
        await feed.stop()


async def test_rejected_key_retries_slowly(make_pipeline: Factory) -> None:
    p = await make_pipeline(api_key="wrong-key-0000")
    await wait_until(lambda: _reconnects(p, "http_401") >= 1)
    await wait_until(lambda: p.workers[0].last_delay_s > 0)
    assert 15 <= p.workers[0].last_delay_s <= 30  # first auth retry: 30 s, jittered
    assert len(p.feed.requests) == 1


@pytest.mark.parametrize(
    ("answer", "reason", "logged"),
    [
        ((400, {"Content-Type": "text/plain"}, "sportsbook is required"), "http_400",
         "sportsbook is required"),
        ((200, {"Content-Type": "text/html"}, "<html><h1>502 Bad Gateway</h1></html>"),
         "bad_content_type", "<html><h1>502 Bad Gateway"),
        ((503, {"Content-Type": "application/json"}, '{"error": "maintenance"}'), "http_503",
         "maintenance"),
    ],
)  # fmt: skip
async def test_http_answers_name_the_problem(
    make_pipeline: Factory, capsys: pytest.CaptureFixture[str], answer: Any, reason: str,
    logged: str,
) -> None:  # fmt: skip
    p = await make_pipeline(answer=answer)
    await wait_until(lambda: _reconnects(p, reason) >= 1)
    assert logged in capsys.readouterr().out
    assert p.sample("ingestor_stream_consecutive_failures", group=p.group.key) >= 1


async def test_pings_only_is_measured_and_warned(
    make_pipeline: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    p = await make_pipeline(no_data_warning_s=0.2)
    await p.feed.wait_connections(1)
    for _ in range(3):
        p.feed.send(frame("ping", "2024-08-28T18:57:49Z"))
        await wait_until(
            lambda: p.sample("ingestor_events_received_total", group=p.group.key,
                             event_type="ping") >= 1)  # fmt: skip
    await wait_until(lambda: p.sample("ingestor_stream_no_data_seconds", group=p.group.key) > 0)
    await wait_until(lambda: _pinged_past(p, 0.25), timeout_s=5)
    assert "stream_no_data" in capsys.readouterr().out


async def _pinged_past(p: Pipeline, seconds: float) -> bool:
    p.feed.send(frame("ping", "now"))
    await asyncio.sleep(0.05)  # pace of the pings the test sends, not a synchronisation
    return p.sample("ingestor_stream_no_data_seconds", group=p.group.key) > seconds


async def test_role_without_write_rights_is_named(database_url: str, pg: Any,
                                                   tmp_path: Path) -> None:  # fmt: skip
    role = f"ro_{uuid.uuid4().hex[:8]}"
    await pg.execute(f"CREATE ROLE {role} LOGIN")
    await pg.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    await pg.execute(f"GRANT INSERT, UPDATE ON odds, fixtures TO {role}")
    config = tmp_path / "c.toml"
    config.write_text('[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n')
    url = database_url.replace("postgres@", f"{role}@", 1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "INGESTOR_DATABASE_URL": url, "OPTICODDS_API_KEY": API_KEY},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    try:
        assert proc.returncode == 1
        text = out.decode()
        assert f"database role {role} lacks privileges" in text
        assert f"GRANT INSERT, UPDATE ON odds_history TO {role}" in text
        assert f"GRANT USAGE ON SEQUENCE odds_history_seq TO {role}" in text
        assert " ON odds TO " not in text  # odds itself is writable
    finally:
        await pg.execute(f"DROP OWNED BY {role}")
        await pg.execute(f"DROP ROLE {role}")
