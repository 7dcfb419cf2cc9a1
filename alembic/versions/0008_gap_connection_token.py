"""a gap is recorded with the commit that first moves its group's cursor past it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 02:20:00

A connection's gap was recorded by gap tracking on the ledger's own connection while the
connection's first events were already being written: a crash between the writer's commit and
the gap's INSERT lost that stretch from the ledger (the next owner's gap starts at the moved
cursor). Now the writer also records the gap, in the transaction that moves the cursor, and gap
tracking records it as before; ``opened_by`` (one per connection) makes the two one row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = (
    "the stream connection whose gap this is (gap tracking and the writer both record it: one "
    "row); null for a failover gap"
)


def upgrade() -> None:
    """Apply this revision."""
    op.add_column(
        "stream_gaps", sa.Column("opened_by", postgresql.UUID(), nullable=True, comment=COMMENT)
    )
    op.create_unique_constraint(op.f("uq_stream_gaps_opened_by"), "stream_gaps", ["opened_by"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_constraint(op.f("uq_stream_gaps_opened_by"), "stream_gaps", type_="unique")
    op.drop_column("stream_gaps", "opened_by")
