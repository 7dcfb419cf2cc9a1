"""The benchmark's end-to-end path on a tiny workload, so that the bench cannot rot unnoticed.

No timing is asserted here: the speed targets live in the bench (``scripts/bench``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench import ledger
from bench.daemon import Pace, Run, run_daemon
from bench.feed import Feed
from bench.workload import Workload, build

pytestmark = pytest.mark.e2e


async def _small_run(database_url: str, tmp_path: Path) -> tuple[Workload, Run]:
    """The bench's daemon against its feed, 2,000 odds over three groups, to the last commit."""
    w = build(2_000, groups=3)
    run = await run_daemon(
        database_url, database_url, w, tmp_path / "daemon.log", Pace(idle_timeout_s=20)
    )
    return w, run


@pytest.mark.timeout(60)
async def test_bench_end_to_end_commits_every_groups_last_entry(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    w, run = await _small_run(database_url, tmp_path)
    log = (tmp_path / "daemon.log").read_text()
    assert run.exit_code == 0, log
    cursors = dict(await pg.fetch("SELECT group_key, last_entry_id FROM stream_cursors"))
    assert cursors == {g.key: g.entry_ids[-1] for g in w.groups}
    assert all(t > 0 for times in run.committed_at.values() for t in times)
    assert run.connections == {g.key: 1 for g in w.groups}, log
    # Re-hydration ran for every group, over REST, and its snapshot reached the tables.
    assert run.log["rehydrations"] == 3 and run.log["results"] == {"complete": 3}, log
    assert run.log["rows"] >= w.snapshot_rows and run.rest_requests > 0
    snapshot = await pg.fetchval("SELECT count(*) FROM odds_history WHERE event_id = 'snapshot'")
    assert snapshot > 0
    assert await pg.fetchval("SELECT count(*) FROM fixtures") >= len(w.snapshot)
    assert run.log["problems"] == {}, log
    # The bench's ledger check: what was stored is the feed's truth.
    assert await ledger.check(database_url, w) == []


@pytest.mark.timeout(60)
async def test_bench_ledger_check_names_a_wrong_price_and_a_lost_history_row(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    w, run = await _small_run(database_url, tmp_path)
    assert run.exit_code == 0 and await ledger.check(database_url, w) == []
    uid = await pg.fetchval("SELECT id FROM odds WHERE status = 'open' ORDER BY id LIMIT 1")
    await pg.execute("UPDATE odds SET price = price + 1 WHERE id = $1", uid)
    wrong = [p for p in await ledger.check(database_url, w) if uid in p]
    assert len(wrong) == 1 and wrong[0].startswith(f"odds: {uid} holds "), wrong
    assert str(ledger.truth(w).state[uid]) in wrong[0]  # the feed's last state, beside
    # The newest change of a streamed odd lost from history: not stored, and odds unexplained.
    odd_key, entry_id = await pg.fetchrow(
        "SELECT odd_key, entry_id FROM odds WHERE entry_id IS NOT NULL ORDER BY id LIMIT 1"
    )
    await pg.execute(
        "DELETE FROM odds_changes c USING odds o WHERE o.odd_key = $1"
        " AND c.odd_key = o.odd_key AND c.source_ts = o.source_ts",
        odd_key,
    )
    problems = await ledger.check(database_url, w)
    assert any(p.startswith("history: (") and entry_id in p and "not stored" in p for p in problems)
    assert any(p.startswith("odds: ") and "newest history at" in p for p in problems)


async def test_feed_answers_rest_as_the_daemon_reads_it() -> None:
    """The snapshot endpoints page and chunk as the vendor's do; a stream needs a known group."""
    w = build(100, groups=3)
    feed = Feed(w)
    base = f"http://127.0.0.1:{await feed.start()}/api/v3"
    leagues = w.groups[0].leagues
    try:
        async with aiohttp.ClientSession() as s:
            ids: list[str] = []
            page, total = 1, 1
            while page <= total:
                params = [
                    ("sport", "basketball"),
                    *(("league", lg) for lg in leagues),
                    ("page", str(page)),
                ]
                async with s.get(f"{base}/copilot/fixtures", params=params) as resp:
                    body = await resp.json()
                assert body["page"] == page
                total = body["total_pages"]
                ids += [f["id"] for f in body["data"]]
                page += 1
            assert ids and all(f["league"]["name"] in leagues for f in body["data"])
            params = [("fixture_id", f) for f in ids[:5]]
            async with s.get(f"{base}/copilot/fixtures/odds", params=params) as resp:
                data = (await resp.json())["data"]
            assert [f["id"] for f in data] == ids[:5] and all(f["odds"] for f in data)
            async with s.get(
                f"{base}/copilot/fixtures/odds", params=[*params, ("settled", "true")]
            ) as resp:
                settled = (await resp.json())["data"]
            assert all(o["settlement"] for f in settled for o in f["odds"])
            too_many = [("fixture_id", f) for f in ids[:6]]
            async with s.get(f"{base}/copilot/fixtures/odds", params=too_many) as resp:
                assert resp.status == 400
            stream = f"{base}/stream/copilot/basketball/odds"
            async with s.get(stream, params=[("league", "nowhere")]) as resp:
                assert resp.status == 404
            # A reconnect with last_entry_id resumes after it, as the vendor documents.
            g = w.groups[1]
            resume = [*(("league", lg) for lg in g.leagues), ("last_entry_id", g.entry_ids[2])]
            async with s.get(stream, params=resume) as resp:
                async for line in resp.content:
                    if line.startswith(b"id: "):
                        assert line.strip() == b"id: " + g.entry_ids[3].encode()
                        break
    finally:
        await feed.close()
    assert feed.rest_requests["/api/v3/copilot/fixtures/odds"] == 3
