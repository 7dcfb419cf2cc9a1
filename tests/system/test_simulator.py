"""The simulator against an independent client, and its own command line."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ingestor.simulator.run import parse_leagues
from tests.conftest import free_port, wait_until
from tests.support.sim import start_sim

NODE_DIR = Path(__file__).parents[1] / "node"


async def test_npm_eventsource_gets_typed_events_and_resumes_with_its_last_id() -> None:
    node = shutil.which("node")
    assert node, "node is needed for this test (the machine's Node.js)"
    assert (NODE_DIR / "node_modules" / "eventsource").is_dir(), "run scripts/test (npm ci)"
    sim = await start_sim(api_key="sim-key-1", retry_ms=50)
    url = f"{sim.base_url}/stream/copilot/basketball/odds?league=NBA&league=NCAAB"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "client.js"),
        url,
        "5",
        "sim-key-1",
        stdout=asyncio.subprocess.PIPE,
        cwd=NODE_DIR,
    )
    lines: list[dict[str, Any]] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(orjson.loads(raw))

    reader = asyncio.create_task(read())
    try:
        await wait_until(lambda: sim.server.open, timeout_s=15)
        await sim.server.emit(30)
        await wait_until(lambda: sum(1 for x in lines if x["type"].startswith("copilot")) >= 3)
        last_id = [x for x in lines if x["type"].startswith("copilot")][-1]["id"]
        sim.server.cut_all(mid_frame=False)
        await wait_until(lambda: len(sim.server.last_event_ids) >= 2, timeout_s=15)
        await sim.server.emit(30)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
        await sim.stop()
    assert sim.server.last_event_ids[0] is None
    assert sim.server.last_event_ids[1] == last_id  # it resumed from the last id it saw
    typed = [x for x in lines if x["type"] != "open" and x["type"] != "error"]
    assert {x["type"] for x in typed} <= {
        "copilot-odds",
        "copilot-locked-odds",
        "copilot-settled-odds",
        "fixture-status",
    }
    assert all(x["id"] == x["entry"] for x in typed)


async def test_simulate_command_serves_streams_and_rest() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "simulate",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--events-per-s",
        "200",
        "--seed",
        "3",
        "--api-key",
        "k-1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/api/v3"
    try:
        async with aiohttp.ClientSession() as s:

            async def up() -> bool:
                try:
                    async with s.get(f"{base}/copilot/fixtures", params={"league": "NBA"}) as r:
                        return r.status == 401
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(up, timeout_s=15, interval_s=0.1)
            async with s.get(f"{base}/copilot/fixtures", params={"league": "NBA"}) as r:
                assert r.status == 401
                assert await r.json() == {"error": "API key is required"}
            headers = {"X-Api-Key": "k-1"}
            async with s.get(
                f"{base}/fixtures/active", params={"league": "NFL"}, headers=headers
            ) as r:
                fixtures = (await r.json())["data"]
            assert fixtures and all(f["league"]["name"] == "NFL" for f in fixtures)
            async with s.get(f"{base}/stream/odds/football", headers=headers) as r:
                assert r.status == 400  # the regular stream needs a sportsbook
            params = [("league", "NFL"), ("sportsbook", "FanDuel")]
            async with s.get(f"{base}/stream/odds/football", params=params, headers=headers) as r:
                assert r.headers["Content-Type"] == "text/event-stream"
                body = b""
                while b"event: odds" not in body and b"event: locked-odds" not in body:
                    body += await asyncio.wait_for(r.content.readany(), 10)
            assert b'"sportsbook":"FanDuel"' in body
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def test_leagues_argument_errors_name_the_item() -> None:
    assert parse_leagues("soccer:Spain - La Liga, basketball:NBA") == [
        ("soccer", "Spain - La Liga"),
        ("basketball", "NBA"),
    ]
    with pytest.raises(ValueError, match="'NBA' is not sport:league"):
        parse_leagues("NBA")
