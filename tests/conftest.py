"""Shared fixtures: a real PostgreSQL, a template database migrated once, a fresh one per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingestor.storage.migrations import upgrade

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_START = (
    "no PostgreSQL answered at {url}; start one (for example `docker compose up -d postgres`) "
    "or set TEST_DATABASE_URL"
)


def _answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").exists():
            return root
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def start_throwaway_cluster(workdir: Path) -> tuple[str, Path, Path]:
    """initdb + pg_ctl start on a free port; returns (url, bin dir, data dir)."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (initdb) installed")
    data = workdir / "data"
    # initdb refuses to run as root: run the cluster as the postgres user when we are root.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix:
        shutil.chown(workdir, "postgres")

    def run(cmd: list[str]) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True)

    run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
    port = free_port()
    run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(workdir / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
        ]
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", bindir, data


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A superuser URL: TEST_DATABASE_URL, the local default, or a cluster we start."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    if _answers(url):
        yield url
        return
    if "TEST_DATABASE_URL" in os.environ:
        pytest.exit(HOW_TO_START.format(url=url), returncode=3)
    workdir = Path(tempfile.mkdtemp(prefix="ingestor-pg-"))
    try:
        url, bindir, data = start_throwaway_cluster(workdir)
    except (RuntimeError, subprocess.CalledProcessError, OSError):
        pytest.exit(HOW_TO_START.format(url=DEFAULT_ADMIN_URL), returncode=3)
    try:
        yield url
    finally:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """A database migrated to head once per session; tests copy it."""
    name = f"ingestor_tpl_{os.getpid()}"
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    upgrade(_with_db(admin_url, name))
    yield name
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"ingestor_t_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_db(admin_url, name)
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_database_url(admin_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = f"ingestor_e_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    yield _with_db(admin_url, name)
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[Any]:
    """An asyncpg connection to this test's database."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def running(database_url: str) -> AsyncIterator[Any]:
    """Factory: a simulator (two basketball leagues) and a supervised pipeline reading it."""
    from tests.support.pipeline import build_pipeline, copilot_stream, supervise
    from tests.support.sim import connected, start_sim

    made: list[Any] = []

    async def factory(
        *, rehydrate: bool = True, stall_timeout_s: float = 3.0, **faults: Any
    ) -> tuple[Any, Any]:
        sim = await start_sim(**faults)
        p = await build_pipeline(
            database_url,
            sim,
            streams=[copilot_stream(["NBA", "NCAAB"])],
            rehydrate=rehydrate,
            stall_timeout_s=stall_timeout_s,
        )
        supervise(p)
        made.append((sim, p))
        await connected(sim)
        return sim, p

    yield factory
    for sim, p in made:
        await p.close()
        await sim.stop()


@pytest.fixture
async def make_pipeline(database_url: str) -> AsyncIterator[Any]:
    """Factory: a pipeline on a fresh local feed (``feed=`` to bring one; ``answer=`` for a
    fixed HTTP answer instead of a stream), not yet supervised; all torn down afterwards."""
    from tests.support.fakefeed import FakeFeed
    from tests.support.pipeline import Pipeline, build_pipeline

    built: list[Pipeline] = []

    async def factory(**kw: Any) -> Pipeline:
        feed = kw.pop("feed", None) or FakeFeed()
        feed.answer = kw.pop("answer", feed.answer)
        if not feed.base_url:
            await feed.start()
        p = await build_pipeline(database_url, feed, **kw)
        built.append(p)
        return p

    yield factory
    for p in built:
        await p.close()
        await p.feed.stop()


async def wait_until(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll an (async or sync) predicate until it returns a truthy value, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        await asyncio.sleep(interval_s)
