"""Alembic glue: where the migrations live, the head revision, and ``upgrade``."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command


class SchemaError(Exception):
    """The database schema is missing or older than this build expects."""


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


def head_revision() -> str:
    """The newest migration this build ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError(f"no migrations found in {alembic_dir()}")
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision`` (blocking; not from inside a running event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Run migrations down to ``revision``."""
    command.downgrade(alembic_config(database_url), revision)
