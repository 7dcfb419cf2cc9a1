"""the repair's work queue indexed by what is still to do

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 02:00:00

The repair asks for its next odds on every call. Without an index of the pending pairs, a
ledger of 1.06M pairs (988k pending: a soak's thousands of gaps) cost 455-504 ms per call,
and the repair fell behind the gaps (10-13 calls a minute). Partial indexes hold only what is
not done, so they stay small while finished work waits for its gap to close.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("NOT done")


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        op.f("ix_stream_gap_odds_gap_id_odd_id"),
        "stream_gap_odds",
        ["gap_id", "odd_id"],
        postgresql_where=PENDING,
    )
    op.create_index(
        op.f("ix_stream_gap_odds_odd_id"), "stream_gap_odds", ["odd_id"], postgresql_where=PENDING
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_stream_gap_odds_odd_id"), table_name="stream_gap_odds")
    op.drop_index(op.f("ix_stream_gap_odds_gap_id_odd_id"), table_name="stream_gap_odds")
