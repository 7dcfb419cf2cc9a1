"""Dashboards and alerts against a real Prometheus scraping the real daemon and simulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, write_config
from tests.support.fakefeed import odd
from tests.support.helpers import event, write_batches

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROM = ROOT / "deploy" / "prometheus"
# Metrics an alert reads that have no series in a healthy run (nothing has failed yet).
EMPTY_UNTIL_A_FAILURE = {"ingestor_db_errors_total"}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus panel, with Grafana variables filled in."""
    out = []
    for panel in json.loads((DASHBOARDS / "ingestor.json").read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "15s")
            expr = expr.replace("$group", ".*").replace("$stream", ".*")
            out.append((panel["title"], expr))
    return out


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
    )


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Daemon]]:
    """Simulator + daemon in demo mode (no key) + Prometheus with the repo's config."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "Prometheus is missing: scripts/test installs Debian's package"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTICODDS_", "INGESTOR_"))}
    sim_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    sim = await _spawn(
        sys.executable,
        "-m",
        "ingestor",
        "simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(sim_port),
        "--events-per-s",
        "300",
        "--retry-ms",
        "200",
        "--ping-interval-s",
        "1",
        env=env,
    )
    config = write_config(
        tmp_path / "ingestor.toml",
        "https://api.opticodds.com/api/v3",
        metrics_port,
        leagues=("NBA", "NCAAB"),
        demo_api_base_url=f"http://127.0.0.1:{sim_port}/api/v3",
    )
    daemon_proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**env, "INGESTOR_DATABASE_URL": database_url},
    )
    daemon = Daemon(daemon_proc, metrics_port)
    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    conf["global"].update(scrape_interval="1s", evaluation_interval="1s")
    conf["rule_files"] = [str(PROM / "alerts.yml")]
    conf["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    prom = await _spawn(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        env=env,
    )
    try:
        yield f"http://127.0.0.1:{prom_port}", daemon
    finally:
        for proc in (prom, sim):
            proc.terminate()
            await proc.wait()
        assert await daemon.stop() == 0


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> tuple[str, list[Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    return body["status"], body.get("data", {}).get("result", [])


async def test_every_dashboard_and_alert_expression_returns_data(
    stack: tuple[str, Daemon],
) -> None:
    base, daemon = stack
    exprs = dashboard_exprs()
    async with aiohttp.ClientSession() as s:

        async def answered() -> bool:
            try:
                results = [await _query(s, base, e) for _, e in exprs]
            except aiohttp.ClientConnectionError:
                return False
            return all(status == "success" and data for status, data in results)

        try:
            await wait_until(answered, timeout_s=60, interval_s=1)
        except AssertionError:
            empty = [t for t, e in exprs if not (await _query(s, base, e))[1]]
            raise AssertionError(f"panels without data: {empty}") from None
        _, demo = await _query(s, base, "ingestor_demo_mode")
        assert demo[0]["value"][1] == "1"  # no key: the dashboard says DEMO
        rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
        declared = set(re.findall(r"^# TYPE (\w+)", await daemon.metrics(), flags=re.M))
        for rule in rules:
            status, _ = await _query(s, base, rule["expr"])
            assert status == "success", rule["alert"]
            for name in set(re.findall(r"ingestor_\w+", rule["expr"])):
                _, series = await _query(s, base, name)
                if name in EMPTY_UNTIL_A_FAILURE:
                    # A labelled counter has no series before its first database error:
                    # the daemon must still declare it (# TYPE names it with or without
                    # _total, by client version).
                    family = re.sub(r"_total$", "", name)
                    assert {name, family} & declared, f"{rule['alert']}: {name} is not declared"
                else:
                    assert series, f"{rule['alert']}: no series {name}"
        async with s.get(f"{base}/api/v1/rules") as resp:
            loaded = (await resp.json())["data"]["groups"][0]["rules"]
        assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
        assert all(r["health"] == "ok" for r in loaded), loaded
    assert daemon.log_events("demo_mode"), "the demo must say so in the logs"


async def test_odds_dashboard_queries_run(database_url: str, pg: Any) -> None:
    now = time.time()  # the panel shows the last hour's moves
    await write_batches(
        database_url,
        [
            event(
                "copilot-odds",
                "1-0",
                [odd("a", league="NBA", ts=now - 20), odd("b", league="NCAAB", ts=now - 20)],
            ),
            event("copilot-locked-odds", "2-0", [odd("a", league="NBA", price=-120, ts=now - 10)]),
        ],
    )
    panels = json.loads((DASHBOARDS / "odds.json").read_text())["panels"]
    check = compose_check()

    async def tables() -> dict[str, list[Any]]:
        return {
            p["title"]: await pg.fetch(check.substitute(p["targets"][0]["rawSql"], {}))
            for p in panels
        }

    results = await tables()
    by_league = {
        r["league"]: (r["open"], r["locked"])
        for r in results["Odds updated in the time range, by league and status"]
    }
    assert by_league == {"NBA": (0, 1), "NCAAB": (1, 0)}
    moves = results["Latest price moves in the time range"]
    assert [(r["kind"], r["price"]) for r in moves][:1] == [("locked", -120)]
    # The tables follow the time picker: what changed before the range is not shown.
    await pg.execute("UPDATE odds SET updated_at = now() - interval '1 day' WHERE league = 'NBA'")
    results = await tables()
    assert {
        r["league"] for r in results["Odds updated in the time range, by league and status"]
    } == {"NCAAB"}


def compose_check() -> Any:
    """scripts/compose_check.py as a module: its substitute() fills Grafana's macros."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compose_check", ROOT / "scripts/compose_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_health_dashboard_reads_right_at_a_glance() -> None:
    """A coloured stat has a red state; no feed is claimed without a daemon; a series that
    several processes export is drawn per instance."""
    panels = json.loads((DASHBOARDS / "ingestor.json").read_text())["panels"]
    aggregated = re.compile(r"^\s*(sum|max|min|avg|count|histogram_quantile|topk)\b")
    for panel in panels:
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if panel["type"] == "stat" and panel["options"].get("colorMode") == "background":
            colours = [s["color"] for s in defaults["thresholds"]["steps"]]
            assert "red" in colours, f"{panel['title']}: green whatever the value"
        for target in panel["targets"] if panel["type"] == "timeseries" else []:
            if not aggregated.match(target["expr"]):
                assert "{{instance}}" in target.get("legendFormat", ""), panel["title"]
    (feed,) = [p for p in panels if p["title"] == "Feed source"]
    assert "vector(" not in feed["targets"][0]["expr"]  # no daemon: no value, never "REAL FEED"
    assert feed["fieldConfig"]["defaults"]["noValue"] == "NO DAEMON REPORTING"
