"""write path tuning: odds fillfactor 70, no received_at index on history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    # Measured on the write path: HOT updates for the newer-wins merge, one index less per
    # history row (time-range reads go by odd id and source_ts, which the unique key serves).
    op.execute("ALTER TABLE odds SET (fillfactor = 70)")
    op.drop_index("ix_odds_history_received_at", table_name="odds_history")


def downgrade() -> None:
    """Revert this revision."""
    op.create_index("ix_odds_history_received_at", "odds_history", ["received_at"])
    op.execute("ALTER TABLE odds RESET (fillfactor)")
