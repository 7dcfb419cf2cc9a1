"""scripts/demo as a user runs it: one command, data in a database of its own, Ctrl-C stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import _admin, _with_db, free_port, wait_until
from tests.integration.test_readme_queries import readme_queries

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


@pytest.fixture
async def missing_database(admin_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet (dropped afterwards)."""
    name = f"ingestor_demo_{uuid.uuid4().hex[:12]}"
    yield _with_db(admin_url, name)
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _scalar(url: str, query: str) -> int:
    """One number from the demo's database (0 while it or its schema does not exist yet)."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return 0
    try:
        return int(await conn.fetchval(query) or 0)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


class Demo:
    """scripts/demo as a user starts it, in its own session (Ctrl-C reaches only it)."""

    def __init__(self, url: str, port: int, logs: Path) -> None:
        self.url, self.port = url, port
        self.out, self.err = logs.with_suffix(".out"), logs.with_suffix(".err")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTICODDS_", "INGESTOR_"))}
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                "bash",
                str(ROOT / "scripts/demo"),
                "--database-url",
                self.url,
                "--metrics-port",
                str(self.port),
                cwd=self.out.parent,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        await wait_until(lambda: b"Ctrl-C stops both" in self.err.read_bytes(), timeout_s=60)

    async def ctrl_c(self) -> int:
        """SIGINT, what Ctrl-C sends; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.proc.wait(), 45)

    async def kill(self) -> None:
        """After a failure: the demo and its children (each in a session of its own, so that
        killing the demo's group would leave them running)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        children = [int(p) for p in re.findall(r"pid (\d+)", self.err.read_text())]
        for pid in (self.proc.pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await self.proc.wait()


async def test_the_demo_is_one_command_and_ctrl_c_stops_both_processes(
    missing_database: str, tmp_path: Path
) -> None:
    url, port = missing_database, free_port()
    demo = Demo(url, port, tmp_path / "first")
    try:
        await demo.start()
        # Until every kind of row the README's queries read exists: both streams, locks and
        # settlements (a fixture settles a minute or so into the demo).
        await wait_until(
            lambda: _scalar(url, "SELECT count(*) FROM settled_odds"), timeout_s=180, interval_s=1
        )
        assert await demo.ctrl_c() == 0
    finally:
        await demo.kill()
    said = demo.err.read_text()
    assert "created" in said and "the schema is at" in said, said
    assert "demo: stopped (daemon exit code 0)" in said, said
    logged = demo.out.read_text()
    assert "shutdown_complete" in logged and "simulator_stopped" in logged, logged[-2000:]
    assert logged.index("shutdown_complete") < logged.index("simulator_stopped")
    # Both children are gone with it: nothing answers on the metrics port any more.
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    # Started again on the same database: the restart is a gap in the ledger, and every SQL
    # block of the README returns rows.
    again = Demo(url, port, tmp_path / "second")
    try:
        await again.start()
        assert "exists" in again.err.read_text()
        # The simulator starts its world afresh: its odds reopen the first run's settled rows
        # (newer wins) until its own first settlements come, so a query may find nothing for a
        # while (query (c) did, twice): every block is asked until it returns rows.
        await wait_until(lambda: _scalar(url, "SELECT count(*) FROM history_gaps"), timeout_s=180)
        conn = await asyncpg.connect(url)
        try:
            for block in readme_queries():
                for statement in filter(str.strip, block.split(";\n")):

                    async def answers(q: str = statement) -> bool:
                        return bool(await conn.fetch(q))

                    try:
                        await wait_until(answers, timeout_s=180, interval_s=0.5)
                    except AssertionError:
                        raise AssertionError(f"no rows on the demo's data:\n{statement}") from None
        finally:
            await conn.close()
        assert await again.ctrl_c() == 0
    finally:
        await again.kill()
