"""The real daemon, as a subprocess with a real config file, against the local feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_until
from tests.support.daemon import start_daemon, write_config
from tests.support.fakefeed import API_KEY, SEED_EVENTS, FakeFeed, odd, odds_frame

pytestmark = pytest.mark.e2e

GROUP = "copilot:basketball:NBA"
SEED_ODD = "1:-1:4825158B6424:1st_half_total_points:over_104_5"
SEED_SETTLED = "1:-1:D86AB59E8025:team_total:miami_heat_over_105_5"


@pytest.fixture
async def feed() -> AsyncIterator[FakeFeed]:
    """A started local feed."""
    f = FakeFeed()
    await f.start()
    yield f
    await f.stop()


async def test_daemon_fills_every_table_from_the_stream(
    feed: FakeFeed, database_url: str, pg: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path / "ingestor.toml", feed.base_url, port)
    daemon = await start_daemon(config, database_url, port)
    try:
        await feed.wait_connections(1, timeout_s=20)
        # The vendor's page, verbatim, then a story of one odd told out of order.
        feed.send(SEED_EVENTS.read_bytes())
        x = "1:-1:FIXE2E:point_spread:home_-3_5"
        t0 = int(time.time())  # entry ids are the vendor's milliseconds: keep them current

        def at(seconds: float) -> tuple[str, float]:
            return f"{int((t0 + seconds) * 1000)}-0", t0 + seconds

        (e0, s0), (e1, s1), (e2, s2), (e05, s05) = at(0), at(1), at(2), at(0.5)
        feed.send(
            odds_frame("copilot-odds", e0, [odd(x, price=-110, ts=s0)]),
            odds_frame("copilot-odds", e1, [odd(x, price=-115, ts=s1)]),
            odds_frame("copilot-locked-odds", e2, [odd(x, price=-118, ts=s2)]),
            odds_frame("copilot-odds", e05, [odd(x, price=-999, ts=s05)]),
        )
        started = time.monotonic()
        await wait_until(
            lambda: pg.fetchval(
                "SELECT last_entry_id = $2 FROM stream_cursors WHERE group_key=$1",
                GROUP,
                e2,
            ),
            timeout_s=20,
        )
        elapsed = time.monotonic() - started
        metrics = await daemon.metrics()
        probes = await daemon.probes()
    finally:
        code = await daemon.stop()
    assert code == 0, b"".join(daemon.lines).decode()

    # odds: the seed odd as sent; the seed lock+settlement (same key) ends settled.
    seed = await pg.fetchrow("SELECT * FROM odds WHERE id = $1", SEED_ODD)
    assert (seed["price"], seed["points"], seed["is_main"], seed["status"]) == (
        -196,
        104.5,
        False,
        "open",
    )
    assert seed["grouping_key"] == "default:104.5" and seed["sportsbook"] is None
    settled = await pg.fetchrow("SELECT * FROM odds WHERE id = $1", SEED_SETTLED)
    assert (settled["status"], settled["settlement"], settled["price"]) == ("settled", "Won", -103)
    assert settled["team_id"] == "26BB4DC5722F" and settled["player_id"] is None
    story = await pg.fetchrow("SELECT * FROM odds WHERE id = $1", x)
    assert (story["status"], story["price"], story["entry_id"]) == (
        "locked",
        -118,
        e2,
    )
    assert await pg.fetchval("SELECT count(*) FROM odds_history") == 7
    assert await pg.fetchval("SELECT count(*) FROM odds_history WHERE id = $1", x) == 4

    fixtures = {r["fixture_id"]: r for r in await pg.fetch("SELECT * FROM fixtures")}
    assert fixtures["E145B23767E0"]["status"] == "cancelled"
    assert fixtures["FB0D30DCDD6C"]["start_date"].isoformat() == "2024-08-28T20:30:00+00:00"
    assert fixtures["FB0D30DCDD6C"]["home_team_display"] == "Miomir Kecmanovic"
    assert await pg.fetchval("SELECT count(*) FROM fixture_status_history") == 2

    # The request: key in the header only; lists as repeated keys.
    first = feed.requests[0]
    assert first.headers["X-Api-Key"] == API_KEY and API_KEY not in first.raw_url
    assert ("league", "NBA") in first.query and ("include_fixture_updates", "true") in first.query

    for name in (
        'ingestor_events_received_total{event_type="copilot-odds",group="copilot:basketball:NBA"}',
        'ingestor_rows_written_total{table="odds"}',
        'ingestor_stream_connected{group="copilot:basketball:NBA"} 1.0',
        "ingestor_lag_seconds_bucket",
        "ingestor_last_data_event_timestamp_seconds",
        "ingestor_writer_queue_depth",
        "ingestor_batch_rows_bucket",
        "ingestor_flush_duration_seconds_bucket",
        "ingestor_db_errors_total",
        "ingestor_stream_reconnects_total",
    ):
        assert name in metrics or name.split("{")[0] in metrics, name

    events = daemon.events()
    names = [e["event"] for e in events]
    assert "stream_connected" in names and "shutdown_complete" in names
    # Today's partitions are made before any stream connects, so no DDL races the first flush.
    assert names.index("partitions_maintained") < names.index("stream_connected")
    assert probes == {"/healthz": 200, "/readyz": 200}

    # The key reached the feed in its header, and nowhere else: logs, metrics, database.
    assert all(API_KEY not in line.decode() for line in daemon.lines)
    assert API_KEY not in metrics
    dump = await pg.fetch(
        "SELECT string_agg(t::text, ' ') AS s FROM (SELECT * FROM odds) t UNION ALL "
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM odds_history) t UNION ALL "
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM stream_cursors) t UNION ALL "
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM dead_letters) t"
    )
    assert not any(r["s"] and API_KEY in r["s"] for r in dump)
    print(f"e2e: 9 data events committed {elapsed:.3f}s after they were sent")
