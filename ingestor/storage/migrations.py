"""Alembic glue: where the migrations live, the head revision, upgrade and downgrade."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from ingestor.config import ConfigError
from ingestor.errors import SchemaError, StartupError
from ingestor.storage import sql
from ingestor.storage.failures import CONNECTION_FAILURES, describe, run_once


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


def migrate(database_url: str, target: str) -> str:
    """``ingestor migrate [--to REVISION]``: up or down to ``target`` ('head', 'base' or a
    revision); returns what it did, in one line. Every failure is a ``ConfigError`` (an
    unknown revision) or a ``StartupError`` (the database), never a traceback."""
    known = revisions()
    if target not in ("head", "base", *known):
        raise ConfigError(f"--to {target}: no such revision (known: {', '.join(known)})")
    current: str | None = run_once(current_revision(database_url), "migrate")
    wanted = known[-1] if target == "head" else None if target == "base" else target
    order = [None, *known]
    if current is not None and current not in known:
        raise StartupError(f"the database is at revision {current}, unknown to this build")
    try:
        if order.index(wanted) >= order.index(current):
            done, verb = upgrade(database_url, target), "applied"
        else:
            done, verb = downgrade(database_url, target), "undid"
    except SQLAlchemyError as exc:  # a statement of a migration failed (as a non-owner, say)
        raise StartupError(f"migrate: {describe(getattr(exc, 'orig', None) or exc)}") from None
    except CONNECTION_FAILURES as exc:
        raise StartupError(f"migrate: cannot use the database: {describe(exc)}") from None
    if done:
        return f"{verb} {', '.join(done)}; the schema is at {wanted or 'base'}"
    return f"nothing to do: the schema is at {current or 'base'}"
