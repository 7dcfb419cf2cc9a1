"""Alembic glue: where the migrations live, the head revision, upgrade and downgrade."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ingestor.errors import SchemaError
from ingestor.storage import sql


def alembic_dir() -> Path:
    """``INGESTOR_ALEMBIC_DIR``, else the checkout's ``alembic/``, else ``./alembic``."""
    env = os.environ.get("INGESTOR_ALEMBIC_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "alembic"
    return beside if beside.is_dir() else Path.cwd() / "alembic"


def alembic_config(database_url: str | None = None) -> Config:
    """A Config that needs no alembic.ini: the CLI and the tests both use it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.attributes["skip_logging"] = True
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest migration this build ships."""
    head = _scripts().get_current_head()
    if head is None:
        raise SchemaError(f"no migrations found in {alembic_dir()}")
    return head


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


async def current_revision(database_url: str) -> str | None:
    """The database's revision (None: no schema yet). Raises the connection's error."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval(sql.SCHEMA_REVISION)  # type: ignore[no-any-return]
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


def _between(lower: str | None, upper: str | None) -> list[str]:
    """Revisions after ``lower`` up to and including ``upper``, oldest first."""
    order = [None, *revisions()]
    return [r for r in order[order.index(lower) + 1 : order.index(upper) + 1] if r]


def upgrade(database_url: str, revision: str = "head") -> list[str]:
    """Run migrations up to ``revision`` (blocking; not from inside a running event loop);
    returns the revisions applied, oldest first."""
    before = asyncio.run(current_revision(database_url))
    command.upgrade(alembic_config(database_url), revision)
    return _between(before, head_revision() if revision == "head" else revision)


def downgrade(database_url: str, revision: str) -> list[str]:
    """Run migrations down to ``revision``; returns the revisions undone, newest first."""
    before = asyncio.run(current_revision(database_url))
    command.downgrade(alembic_config(database_url), revision)
    target = None if revision == "base" else revision
    return list(reversed(_between(target, before)))
