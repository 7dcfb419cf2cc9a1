"""history partitioned by day of source_ts, with a default partition

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSTZ = sa.DateTime(timezone=True)


def _odds_history(name: str, partitioned: bool) -> None:
    op.create_table(
        name,
        sa.Column(
            "history_id",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("nextval('odds_history_seq'::regclass)"),
        ),
        sa.Column("id", sa.Text(), nullable=False, comment="odds.id of the odd"),
        sa.Column("kind", sa.Text(), nullable=False, comment="odds, locked or settled"),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("fixture_id", sa.Text(), nullable=True),
        sa.Column("price", sa.Double(), nullable=True),
        sa.Column("points", sa.Double(), nullable=True),
        sa.Column("is_main", sa.Boolean(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("settlement", sa.Text(), nullable=True),
        sa.Column("settled_at", TSTZ, nullable=True),
        sa.Column("source_ts", TSTZ, nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False, comment="the SSE id: line"),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("received_at", TSTZ, nullable=False),
        sa.CheckConstraint("kind IN ('odds', 'locked', 'settled')", name="ck_odds_history_kind"),
        sa.PrimaryKeyConstraint("history_id", "source_ts", name="pk_odds_history"),
        sa.UniqueConstraint(
            "id", "entry_id", "kind", "source_ts", name="uq_odds_history_id_entry_id_kind_source_ts"
        ),
        **({"postgresql_partition_by": "RANGE (source_ts)"} if partitioned else {}),
    )


def _fixture_history(name: str, partitioned: bool) -> None:
    op.create_table(
        name,
        sa.Column(
            "history_id",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("nextval('fixture_status_history_seq'::regclass)"),
        ),
        sa.Column("fixture_id", sa.Text(), nullable=False),
        sa.Column("game_id", sa.Text(), nullable=True),
        sa.Column("sport", sa.Text(), nullable=True),
        sa.Column("league", sa.Text(), nullable=True),
        sa.Column("old_status", sa.Text(), nullable=True),
        sa.Column("new_status", sa.Text(), nullable=True),
        sa.Column("old_start_date", TSTZ, nullable=True),
        sa.Column("new_start_date", TSTZ, nullable=True),
        sa.Column("source_ts", TSTZ, nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("received_at", TSTZ, nullable=False),
        sa.PrimaryKeyConstraint("history_id", "source_ts", name="pk_fixture_status_history"),
        sa.UniqueConstraint(
            "fixture_id",
            "entry_id",
            "source_ts",
            name="uq_fixture_status_history_fixture_id_entry_id_source_ts",
        ),
        **({"postgresql_partition_by": "RANGE (source_ts)"} if partitioned else {}),
    )


def _swap(table: str, create: object, columns: str) -> None:
    """Rename the old table out of the way, create the partitioned one, copy, drop."""
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    names = sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)")
    for constraint in op.get_bind().execute(names, {"t": f"{table}_old"}).scalars():
        op.execute(
            f'ALTER TABLE {table}_old RENAME CONSTRAINT "{constraint}" TO "{constraint}_old"'
        )
    op.execute(f"CREATE SEQUENCE {table}_seq")
    create(table, True)  # type: ignore[operator]
    op.execute(f"ALTER SEQUENCE {table}_seq OWNED BY {table}.history_id")
    # Rows of days without their own partition land here; the daemon creates the days ahead.
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_old")
    op.execute(
        f"SELECT setval('{table}_seq', "
        f"coalesce((SELECT max(history_id) FROM {table}), 0) + 1, false)"
    )
    op.execute(f"DROP TABLE {table}_old")


ODDS_COLUMNS = (
    "history_id, id, kind, stream, fixture_id, price, points, is_main, status, settlement, "
    "settled_at, source_ts, entry_id, event_id, group_key, received_at"
)
FIXTURE_COLUMNS = (
    "history_id, fixture_id, game_id, sport, league, old_status, new_status, old_start_date, "
    "new_start_date, source_ts, entry_id, group_key, received_at"
)


def upgrade() -> None:
    """Apply this revision."""
    _swap("odds_history", _odds_history, ODDS_COLUMNS)
    _swap("fixture_status_history", _fixture_history, FIXTURE_COLUMNS)


def downgrade() -> None:
    """Revert this revision (back to plain tables; history_id becomes an identity again)."""
    for table, columns, unique in (
        ("odds_history", ODDS_COLUMNS, "id, entry_id, kind"),
        ("fixture_status_history", FIXTURE_COLUMNS, "fixture_id, entry_id"),
    ):
        op.execute(
            f"CREATE TABLE {table}_plain (LIKE {table} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING COMMENTS)"
        )
        op.execute(f"INSERT INTO {table}_plain ({columns}) SELECT {columns} FROM {table}")
        op.execute(f"DROP TABLE {table} CASCADE")
        op.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN history_id DROP DEFAULT")
        op.execute(f"DROP SEQUENCE IF EXISTS {table}_seq")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN history_id ADD GENERATED ALWAYS AS IDENTITY")
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'history_id'), "
            f"coalesce((SELECT max(history_id) FROM {table}), 0) + 1, false)"
        )
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (history_id)")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT uq_{table}_"
            f"{unique.replace(', ', '_')} UNIQUE ({unique})"
        )
    # upgrade() named the check with the naming convention's prefix twice; 0003 had it once.
    op.execute(
        "ALTER TABLE odds_history RENAME CONSTRAINT ck_odds_history_ck_odds_history_kind "
        "TO ck_odds_history_kind"
    )
