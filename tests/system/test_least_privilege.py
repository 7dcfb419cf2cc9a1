"""What compose does: roles from the init script, migrations as the owner, the real daemon as
the least-privileged role (partition upkeep as the owner), and health that tells the truth."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingestor.storage.migrations import upgrade
from tests.conftest import free_port, wait_until
from tests.support.daemon import Daemon, run_cli, start_daemon, write_config
from tests.support.fakefeed import API_KEY
from tests.support.sim import RunningSim, connected, emitting, history_diff, settle, start_sim

pytestmark = pytest.mark.e2e


ROOT = Path(__file__).parents[2]


INIT_ROLES = ROOT / "deploy" / "postgres" / "init-roles.sh"


@dataclass
class Roles:
    """One database set up as compose sets it up."""

    owner_url: str
    app_url: str
    reader_url: str
    app: str


def _as(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def run_init_roles(admin_url: str, dbname: str, app: str, reader: str) -> None:
    """deploy/postgres/init-roles.sh, with the variables the postgres image gives it."""
    host_port = admin_url.rpartition("@")[2].rpartition("/")[0]
    host, _, port = host_port.partition(":")
    env = {
        **os.environ,
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": dbname,
        "PGHOST": host,
        "PGPORT": port or "5432",
        "INGESTOR_DB_USER": app,
        "INGESTOR_DB_PASSWORD": "pw",
        "GRAFANA_DB_USER": reader,
        "GRAFANA_DB_PASSWORD": "it's / #",
    }
    out = subprocess.run(
        ["sh", str(INIT_ROLES)], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture
async def roles(admin_url: str) -> AsyncIterator[Roles]:
    """A new database: init-roles.sh first (as on a new volume), then the migrations."""
    suffix = uuid.uuid4().hex[:8]
    dbname, app, reader = f"ingestor_lp_{suffix}", f"app_{suffix}", f"reader_{suffix}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    owner_url = f"{admin_url.rpartition('/')[0]}/{dbname}"
    try:
        run_init_roles(admin_url, dbname, app, reader)
        await asyncio.to_thread(upgrade, owner_url)
        yield Roles(owner_url, _as(owner_url, app), _as(owner_url, reader), app)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for role in (app, reader):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def _app_daemon(tmp_path: Path, sim: RunningSim, roles: Roles, **extra: Any) -> Daemon:
    port = free_port()
    config = write_config(
        tmp_path / "ingestor.toml",
        sim.base_url,
        port,
        leagues=("NBA", "NCAAB"),
        maintenance_database_url=roles.owner_url,
        **extra,
    )
    return await start_daemon(config, roles.app_url, port)


async def test_the_daemon_as_the_compose_role_stores_what_the_feed_sent(
    roles: Roles, tmp_path: Path
) -> None:
    sim = await start_sim()
    daemon = await _app_daemon(tmp_path, sim, roles)
    reader = await asyncpg.connect(roles.reader_url)  # read as Grafana reads
    try:
        await connected(sim, timeout_s=20)
        first = len(sim.server.world.log)
        async with emitting(sim):
            await wait_until(
                lambda: reader.fetchval("SELECT count(*) FROM odds_history"), timeout_s=20
            )
        await settle(reader, sim, context="as the compose role: ")
        assert await history_diff(reader, sim.server.world, complete_from=first) == []
        for table in ("odds", "odds_history", "fixtures", "stream_cursors"):
            assert await reader.fetchval(f"SELECT count(*) FROM {table}") > 0, table
        assert (await daemon.readyz())[0] == 200
    finally:
        code = await daemon.stop()
        await reader.close()
        await sim.stop()
    assert code == 0
    assert not daemon.log_events("flush_failed")
    # Partition DDL ran as the owner, through maintenance_database_url.
    (done,) = daemon.log_events("partitions_maintained")
    assert "odds_changes_p" in " ".join(done["created"])
    (stopped,) = daemon.log_events("shutdown_complete")
    assert stopped["events_queued"] == stopped["events_committed"] > 0


async def test_run_refuses_to_start_and_names_a_missing_grant(roles: Roles, tmp_path: Path) -> None:
    owner = await asyncpg.connect(roles.owner_url)
    try:
        seq = "fixture_status_history_seq"
        await owner.execute(f'REVOKE USAGE ON SEQUENCE {seq} FROM "{roles.app}"')
        await owner.execute(f'REVOKE UPDATE ON stream_cursors FROM "{roles.app}"')
    finally:
        await owner.close()
    sim = await start_sim()
    daemon = await _app_daemon(tmp_path, sim, roles)
    try:
        code = await daemon.exited()
    finally:
        await sim.stop()
    out = b"".join(daemon.lines).decode()
    assert code == 1, out
    problem = [line for line in out.splitlines() if "lacks privileges" in line]
    assert len(problem) == 1, out
    assert f"GRANT USAGE ON SEQUENCE fixture_status_history_seq TO {roles.app}" in problem[0]
    assert f"GRANT UPDATE ON stream_cursors TO {roles.app}" in problem[0]
    assert "Traceback" not in out
    assert not sim.server.requests, "a daemon that cannot write must not stream"


async def _metric(daemon: Daemon, name: str) -> float:
    for line in (await daemon.metrics()).splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


async def test_readyz_fails_while_commits_stall_and_recovers_by_itself(
    roles: Roles, tmp_path: Path
) -> None:
    bound_s = 3.0
    sim = await start_sim()
    daemon = await _app_daemon(
        tmp_path, sim, roles, ready_commit_wait_s=bound_s, flush_retry_max_s=0.5
    )
    owner = await asyncpg.connect(roles.owner_url)
    try:
        await connected(sim, timeout_s=20)
        async with emitting(sim):
            await wait_until(
                lambda: owner.fetchval("SELECT count(*) FROM odds_history"), timeout_s=20
            )
            assert (await daemon.readyz())[0] == 200
            # Like the first release's missing grant: every flush is refused.
            await owner.execute(f'REVOKE INSERT ON odds_changes FROM "{roles.app}"')
            await wait_until(lambda: daemon.log_events("flush_failed"), timeout_s=10)

            async def not_ready() -> bool:
                return not await daemon.ready()

            await wait_until(not_ready, timeout_s=bound_s + 3, interval_s=0.1)
            status, body = await daemon.readyz()
            assert status == 503 and "InsufficientPrivilegeError" in body, body
            assert await _metric(daemon, "ingestor_events_pending") > 0
            stale = time.time() - await _metric(daemon, "ingestor_last_commit_timestamp_seconds")
            assert stale >= bound_s
            await owner.execute(f'GRANT INSERT ON odds_changes TO "{roles.app}"')
            await wait_until(daemon.ready, timeout_s=15, interval_s=0.2)
        await settle(owner, sim, timeout_s=30)
        assert await _metric(daemon, "ingestor_events_pending") == 0
    finally:
        code = await daemon.stop()
        await owner.close()
        await sim.stop()
    assert code == 0


async def test_role_without_write_rights_is_named(
    database_url: str, pg: Any, tmp_path: Path
) -> None:
    role = f"ro_{uuid.uuid4().hex[:8]}"
    await pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await pg.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        await pg.execute(f"GRANT INSERT, UPDATE ON odds, fixtures TO {role}")
        config = tmp_path / "c.toml"
        config.write_text(
            '[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n'
        )
        url = database_url.replace("postgres@", f"{role}@", 1)
        code, text = await run_cli(
            "run",
            "--config",
            str(config),
            env={"INGESTOR_DATABASE_URL": url, "OPTICODDS_API_KEY": API_KEY},
        )
        assert code == 1
        assert f"database role {role} lacks privileges" in text
        assert f"GRANT DELETE, INSERT, UPDATE ON odds_changes TO {role}" in text
        assert f"GRANT USAGE ON SEQUENCE fixture_status_history_seq TO {role}" in text
        assert " ON odds TO " not in text  # odds itself is writable
    finally:
        await pg.execute(f"DROP OWNED BY {role}")
        await pg.execute(f"DROP ROLE {role}")
