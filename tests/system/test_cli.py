"""The command line as an operator meets it: one line per problem, the right exit code, and
what each command did, said plainly."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.storage.migrations import head_revision
from ingestor.storage.partitions import partition_name
from tests.conftest import free_port, wait_until
from tests.support.daemon import run_cli, start_daemon, write_config
from tests.support.fakefeed import API_KEY
from tests.support.helpers import TABLES, partitions, tables
from tests.support.sim import connected, start_sim

pytestmark = pytest.mark.e2e
README = Path(__file__).parents[2] / "README.md"
# Each command and the first words of what --help says it does.
COMMANDS = {
    "run": "stream into PostgreSQL",
    "migrate": "bring the database schema to the newest revision",
    "check-config": "validate the configuration and list the connections",
    "partitions": "create the history's day partitions ahead",
    "simulate": "serve a local stand-in for the OpticOdds API",
}


def one_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


def _url(admin_url: str, dbname: str, user: str = "postgres", port: int | None = None) -> str:
    host = admin_url.rpartition("@")[2].rpartition("/")[0].partition(":")[0]
    default_port = admin_url.rpartition("@")[2].rpartition("/")[0].partition(":")[2] or "5432"
    return f"postgresql://{user}:s3cret-pw@{host}:{port or default_port}/{dbname}"


def _config(tmp_path: Path, **extra: Any) -> Path:
    return write_config(tmp_path / "c.toml", "http://127.0.0.1:9/api/v3", free_port(), **extra)


async def test_migrate_names_a_missing_database_or_a_wrong_port_in_one_line(
    admin_url: str,
) -> None:
    code, out = await run_cli("migrate", env={"INGESTOR_DATABASE_URL": _url(admin_url, "nope_db")})
    assert code == 1
    assert 'database "nope_db" does not exist' in one_line(out)
    assert "s3cret-pw" not in out
    code, out = await run_cli(
        "migrate", env={"INGESTOR_DATABASE_URL": _url(admin_url, "postgres", port=free_port())}
    )
    assert code == 1
    assert "cannot use the database" in one_line(out) and "s3cret-pw" not in out


async def test_migrate_says_what_it_applied_and_undid(empty_database_url: str) -> None:
    env = {"INGESTOR_DATABASE_URL": empty_database_url}
    from ingestor.storage.migrations import revisions

    known = revisions()
    code, out = await run_cli("migrate", env=env)
    assert code == 0
    assert one_line(out) == f"applied {', '.join(known)}; the schema is at {known[-1]}"
    code, out = await run_cli("migrate", env=env)
    assert (code, one_line(out)) == (0, f"nothing to do: the schema is at {known[-1]}")
    code, out = await run_cli("migrate", "--to", known[-2], env=env)
    assert (code, one_line(out)) == (0, f"undid {known[-1]}; the schema is at {known[-2]}")
    code, out = await run_cli("migrate", "--to", "no-such", env=env)
    assert code == 2 and "--to no-such: no such revision" in one_line(out)
    code, out = await run_cli("migrate", env=env)
    assert (code, one_line(out)) == (0, f"applied {known[-1]}; the schema is at {known[-1]}")


async def test_partitions_on_a_missing_or_unmigrated_database(
    admin_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    code, out = await run_cli(
        "partitions", "--config", str(config), env={"INGESTOR_DATABASE_URL": empty_database_url}
    )
    assert code == 1 and "run `ingestor migrate` first" in one_line(out)
    gone = {"INGESTOR_DATABASE_URL": _url(admin_url, "gone_db")}
    code, out = await run_cli("partitions", "--config", str(config), env=gone)
    assert code == 1 and 'database "gone_db" does not exist' in one_line(out)


async def test_run_fails_at_once_on_a_permanent_database_refusal(
    admin_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, database_wait_s=60)
    for url, cause in (
        (_url(admin_url, "absent_db"), 'database "absent_db" does not exist'),
        (_url(admin_url, "postgres", user="no_such_role"), 'role "no_such_role" does not exist'),
    ):
        started = time.monotonic()
        env = {"INGESTOR_DATABASE_URL": url, "OPTICODDS_API_KEY": "k"}
        code, out = await run_cli("run", "--config", str(config), env=env)
        assert code == 1 and cause in one_line(out), out
        assert time.monotonic() - started < 10, "a permanent error must not wait database_wait_s"


async def test_a_taken_port_is_one_line_for_run_and_simulate(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.toml", "http://127.0.0.1:9/api/v3", port)
        code, out = await run_cli(
            "run",
            "--config",
            str(config),
            env={"INGESTOR_DATABASE_URL": database_url, "OPTICODDS_API_KEY": API_KEY},
        )
        assert code == 1
        assert f"metrics port 127.0.0.1:{port} cannot be opened" in one_line(out), out
        # The port is the first thing start-up opens: before the database, its partitions.
        unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/odds"
        started = time.monotonic()
        code, out = await run_cli(
            "run",
            "--config",
            str(
                write_config(
                    tmp_path / "w.toml", "http://127.0.0.1:9/api/v3", port, database_wait_s=30
                )
            ),
            env={"INGESTOR_DATABASE_URL": unreachable, "OPTICODDS_API_KEY": API_KEY},
        )
        assert code == 1 and f"metrics port 127.0.0.1:{port}" in one_line(out), out
        assert time.monotonic() - started < 10  # not after waiting for the database
        code, out = await run_cli("simulate", "--host", "127.0.0.1", "--port", str(port))
        assert code == 1 and f"port 127.0.0.1:{port} cannot be opened" in out, out
        assert "Traceback" not in out


async def test_check_config_lists_the_connections_it_will_open(tmp_path: Path) -> None:
    leagues = tuple(f"L{i}" for i in range(11))
    config = write_config(tmp_path / "c.toml", "http://127.0.0.1:9/api/v3", 9108, leagues=leagues)
    code, out = await run_cli("check-config", "--config", str(config))
    assert code == 0
    lines = out.splitlines()
    assert "2 connection(s) of at most 10 leagues" in lines[0]
    assert lines[1].split() == [
        "copilot:basketball:" + "+".join(sorted(leagues[:10])),
        "(10",
        "league(s))",
    ]
    assert lines[2].split() == ["copilot:basketball:L10", "(1", "league(s))"]


async def test_the_demo_switch_and_an_ignored_demo_url_are_said(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        "https://api.opticodds.com/api/v3",
        9108,
        demo_api_base_url="http://127.0.0.1:8080/api/v3",
    )
    env = {"OPTICODDS_API_KEY": "a-real-key"}
    code, out = await run_cli("check-config", "--config", str(config), env=env)
    assert code == 0 and "to https://api.opticodds.com/api/v3" in out and "DEMO" not in out
    code, out = await run_cli(
        "check-config", "--config", str(config), env={**env, "INGESTOR_DEMO": "true"}
    )
    assert code == 0 and "to http://127.0.0.1:8080/api/v3 (DEMO: the simulator)" in out
    bare = write_config(tmp_path / "d.toml", "https://api.opticodds.com/api/v3", 9108)
    code, out = await run_cli(
        "check-config", "--config", str(bare), env={**env, "INGESTOR_DEMO": "true"}
    )
    assert code == 2 and "demo = true needs demo_api_base_url" in out


async def test_logs_stay_json_and_say_that_data_flows(database_url: str, tmp_path: Path) -> None:
    sim = await start_sim()
    port = free_port()
    unused = "http://127.0.0.1:1/api/v3"
    config = write_config(
        tmp_path / "c.toml",
        sim.base_url,
        port,
        leagues=("NBA", "NCAAB"),
        progress_log_s=0.3,
        demo_api_base_url=unused,
    )
    daemon = await start_daemon(config, database_url, port)
    try:
        await connected(sim, timeout_s=20)
        await sim.server.emit(30)
        await wait_until(
            lambda: any(
                e.get("events_committed", 0) > 0 for e in daemon.log_events("ingest_progress")
            ),
            timeout_s=20,
        )
        # A broken HTTP request on the metrics port: aiohttp logs it through stdlib logging.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
    finally:
        code = await daemon.stop()
        await sim.stop()
    assert code == 0
    events = daemon.events()  # every line parses as one JSON object (fails otherwise)
    names = [e["event"] for e in events]
    assert "rehydrate_started" in names and "rehydrate_done" in names
    assert "demo_url_ignored" in names  # a key is set: the demo URL is unused, and said so
    progress = [e for e in events if e["event"] == "ingest_progress"]
    assert {
        "events_committed",
        "odds_committed",
        "lag_p99_s_at_most",
        "groups_connected",
        "groups_owned",
        "events_pending",
    } <= set(progress[-1])
    foreign = [e for e in events if e.get("logger", "").startswith("aiohttp")]
    assert foreign and all(orjson.dumps(e) for e in foreign)


async def test_run_refuses_a_database_without_schema(
    empty_database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n')
    env = {"INGESTOR_DATABASE_URL": empty_database_url, "OPTICODDS_API_KEY": API_KEY}
    code, out = await run_cli("run", "--config", str(config), env=env)
    assert code == 1
    assert "run `ingestor migrate`" in out and head_revision() in out
    assert API_KEY not in out

    code, out = await run_cli("migrate", env=env)
    assert code == 0, out
    assert await tables(empty_database_url) == TABLES


async def test_help_says_what_every_command_does() -> None:
    code, out = await run_cli("--help")
    assert code == 0, out
    listed = " ".join(out.partition("COMMAND\n")[2].partition("options:")[0].split())
    readme = README.read_text()
    for name, says in COMMANDS.items():
        assert f"{name} {says}" in listed, f"--help: {name}"
        assert f"ingestor {name}" in readme, f"README: {name}"
        code, sub = await run_cli(name, "--help")
        assert code == 0 and f"usage: ingestor {name}" in sub, sub


async def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "database_wait_s = 0.5\n"
        '[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n'
    )
    env = {
        "INGESTOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
        "OPTICODDS_API_KEY": API_KEY,
    }
    code, out = await run_cli("run", "--config", str(config), env=env)
    assert code == 1
    assert "PostgreSQL not reachable after" in out


async def test_partitions_command_keeps_today_and_ahead(
    database_url: str, pg: Any, tmp_path: Any
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "partitions_ahead_days = 3\n"
        '[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n'
    )
    code, out = await run_cli(
        "partitions", "--config", str(config), env={"INGESTOR_DATABASE_URL": database_url}
    )
    assert code == 0, out
    assert "created 12, dropped 0" in out  # 4 days x 3 tables
    today = datetime.now(UTC).date()
    parts = await partitions(pg, "fixture_status_history")
    assert partition_name("fixture_status_history", today + timedelta(days=3)) in parts


async def test_starting_the_daemon_imports_no_alembic() -> None:
    """The schema check compares with a constant: alembic loads for `migrate` only."""
    code = "import sys, ingestor.cli.app; print('alembic' in sys.modules)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert out.decode().strip() == "False"


async def test_every_command_takes_a_url_naming_several_hosts(
    admin_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    """host1:port1,host2:port2 with target_session_attrs (Patroni, managed services): the
    first host down, the second the primary; and every host down: one line, no traceback."""
    dbname = empty_database_url.rpartition("/")[2]
    host_port = admin_url.rpartition("@")[2].rpartition("/")[0]
    two = (
        f"postgresql://postgres@127.0.0.1:{free_port()},{host_port}/{dbname}"
        "?target_session_attrs=read-write"
    )
    for command in (("migrate",), ("partitions", "--config", str(_config(tmp_path)))):
        code, out = await run_cli(*command, env={"INGESTOR_DATABASE_URL": two})
        assert code == 0, out
    none = (
        f"postgresql://postgres@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{dbname}"
        "?target_session_attrs=read-write"
    )
    for command in (("migrate",), ("partitions", "--config", str(_config(tmp_path)))):
        code, out = await run_cli(*command, env={"INGESTOR_DATABASE_URL": none})
        assert code == 1 and "Traceback" not in out
        assert "cannot use the database" in one_line(out), out
