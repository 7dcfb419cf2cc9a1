"""Alembic environment: runs migrations over asyncpg, so no second driver is needed."""

from __future__ import annotations

import asyncio
import os
import re
from logging.config import fileConfig

import asyncpg
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ingestor.storage.models import metadata

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _dsn() -> str:
    return str(
        config.attributes.get("database_url")
        or os.environ.get("INGESTOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )


def _url() -> str:
    _, _, rest = _dsn().partition("://")
    return f"postgresql+asyncpg://{rest}"


def _include(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Day partitions are made by the daemon, not by migrations: leave them out of drift."""
    return not (type_ == "table" and name and re.search(r"_(p\d{8}|default)$", name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # asyncpg connects, not SQLAlchemy's URL parser: a URL naming several hosts
    # (host1:5432,host2:5432, with target_session_attrs=read-write) reaches the primary.
    dsn = _dsn()
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(dsn)
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
